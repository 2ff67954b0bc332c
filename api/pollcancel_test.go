package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// TestGetClientGoneFinishesRead: a poll whose client hangs up while its
// read waits in Postgres still finishes the read. Cancelling it would cost
// Postgres a connection of its own (lib/pq's cancel request) and the pool
// the connection lib/pq then marks bad: a burst of hung-up polls left later
// polls waiting seconds for new connections (issue 11's benchmark, at the
// end of each round).
func TestGetClientGoneFinishesRead(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	id := uuid.Must(uuid.NewV7()).String()
	e.apply(t, events.Requested{Payment: payment(id, "acme")})

	// Polls wait in Postgres while the table is locked.
	tx := e.db.MustBegin()
	tx.MustExec(`LOCK TABLE stk_pushes IN ACCESS EXCLUSIVE MODE`)
	const polls = 3
	ctx, hangUp := context.WithCancel(context.Background())
	codes := make(chan int, polls)
	for range polls {
		req := newRequest(http.MethodGet, RecordPath+id, acmeToken, "", "").WithContext(ctx)
		go func() {
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			codes <- rec.Code
		}()
	}
	wait.For(t, "polls waiting on the lock", func() bool {
		var n int
		if err := e.db.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`); err != nil {
			t.Fatal(err)
		}
		return n == polls
	})
	hangUp()
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	for range polls {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("poll whose client hung up: %d, want its read finished (200)", code)
		}
	}
}
