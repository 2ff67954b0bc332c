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

// TextArgs is upsert's arguments for a batch of one row per string of ss,
// every text column but the tracking id holding that string, every number
// column n, every row folded.
func TextArgs(ids, ss []string, n int64) []any {
	b := make(batch, len(ss))
	for i, s := range ss {
		b[i] = input{trackingID: ids[i], client: s, phone: s, amount: n, reference: s, tag: s, status: n,
			responseCode: s, responseDescription: s, transactionCode: s, merchantRequestID: s, checkoutRequestID: s,
			transactionDate: s, stage: n, source: s, requestedAt: s, folded: true}
	}
	return b.args()
}
