package store

// SearchQuery is searchQuery, for the tests of its plans.
var SearchQuery = searchQuery

// InTransaction makes s apply every batch in a transaction (BEGIN, its
// statements, COMMIT), never as a lone statement, and returns s: the
// differential test compares the two.
func (s *Store) InTransaction() *Store {
	s.alwaysTx = true
	return s
}
