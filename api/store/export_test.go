package store

// SearchQuery is searchQuery, for the tests of its plans.
var SearchQuery = searchQuery
