package store_test

import (
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/stkgate/stkgate/api/store/pgtest"
)

// TestPoolKeepsABurstsConnections: connections a burst of requests opened,
// up to the pool's limit, stay open once the burst is over. A pool that
// closed some of them opened them again at the next burst (a Postgres
// backend started each time): the api's polls under 32 concurrent clients
// paid that over and over (issue 11's benchmark).
func TestPoolKeepsABurstsConnections(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	n := db.Stats().MaxOpenConnections
	var txs []*sqlx.Tx
	for range n {
		tx, err := db.Beginx()
		if err != nil {
			t.Fatal(err)
		}
		txs = append(txs, tx)
	}
	for _, tx := range txs {
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
	}
	if s := db.Stats(); s.MaxIdleClosed != 0 || s.Idle != n {
		t.Errorf("after a burst of %d: %d idle, %d closed as over the idle limit; want all %d kept", n, s.Idle, s.MaxIdleClosed, n)
	}
}
