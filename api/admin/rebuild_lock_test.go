package admin_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/api/admin"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// waiting reports whether a session waits for a lock on the live table.
func waiting(t *testing.T, db interface {
	Get(any, string, ...any) error
}) bool {
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM pg_locks WHERE relation = 'public.stk_pushes'::regclass AND NOT granted`); err != nil {
		t.Error(err)
	}
	return n > 0
}

// polled is wait.For for a goroutine of a test, which must not stop it:
// whether cond came to hold within wait.Timeout.
func polled(cond func() bool) bool {
	deadline := time.Now().Add(wait.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// The projector reads the table before it writes when a batch names a
// receipt or CheckoutRequestID (store.resolveReceipts): the swap, waiting
// for the table while such a transaction holds it, must neither deadlock
// with it nor fail.
func TestRebuildReadModelProjectorReadsThenWrites(t *testing.T) {
	ns := natstest.Start(t)
	url := pgtest.NewURL(t)
	db := openDB(t, url)
	p := newPay(1, "0")
	publish(t, ns.JS, p.requested)

	ctx := context.Background()
	written := make(chan error, 1)
	defer admin.SetRebuildHook(func(phase string) {
		if phase != "copied" {
			return
		}
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := tx.Get(&n, `SELECT count(*) FROM stk_pushes WHERE upper(transaction_code) = 'R1'`); err != nil {
			t.Fatal(err)
		}
		go func() {
			// Writes once the swap waits for (or holds) the table.
			if !polled(func() bool { return waiting(t, db) }) {
				_ = tx.Rollback()
				written <- errors.New("the swap never waited for the table")
				return
			}
			_, err := tx.Exec(`INSERT INTO stk_pushes (tracking_id, client, phone_number, amount, reference, created_at, updated_at) VALUES ($1, 'acme', '254712345678', 1, 'X', now(), now())`, p.id)
			if err == nil {
				err = tx.Commit()
			} else {
				_ = tx.Rollback()
			}
			written <- err
		}()
	})()
	r := runDeps(t, admin.Deps{DB: db, DatabaseURL: url, JS: ns.JS}, "rebuild-read-model")
	if r.code != admin.ExitOK {
		t.Errorf("rebuild: exit %d: %s\n%s", r.code, r.stderr, r.stdout)
	}
	if err := <-written; err != nil {
		t.Errorf("the projector's transaction: %v", err)
	}
}

// A session that holds the live table (idle in a transaction) makes the
// swap give up after its tries, each waiting at most a second (the api's
// reads queue behind a waiting swap), with nothing changed.
func TestRebuildReadModelTableBusy(t *testing.T) {
	ns := natstest.Start(t)
	url := pgtest.NewURL(t)
	db := openDB(t, url)
	p := newPay(1, "0")
	publish(t, ns.JS, p.requested)
	defer admin.SetSwapAttempts(2)()

	tx, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.Get(&n, `SELECT count(*) FROM stk_pushes`); err != nil {
		t.Fatal(err)
	}
	// A reader that comes while the swap waits is served within the
	// swap's lock timeout.
	read := make(chan time.Duration, 1)
	go func() {
		if !polled(func() bool { return waiting(t, db) }) {
			t.Error("the swap never waited for the table")
		}
		start := time.Now()
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM stk_pushes`); err != nil {
			t.Error(err)
		}
		read <- time.Since(start)
	}()
	start := time.Now()
	r := runDeps(t, admin.Deps{DB: db, DatabaseURL: url, JS: ns.JS}, "rebuild-read-model")
	took := time.Since(start)
	if r.code != admin.ExitError || !strings.Contains(r.stderr, "could not lock the live table stk_pushes in 2 tries") {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if d := <-read; d > 2*time.Second {
		t.Errorf("a read waited %s behind the swap", d)
	}
	if took > 20*time.Second {
		t.Errorf("the rebuild took %s to give up", took)
	}
	var tables int
	db.Get(&tables, `SELECT count(*) FROM pg_tables WHERE tablename LIKE 'stk_pushes%' OR schemaname = 'stkgate_rebuild'`)
	if tables != 1 {
		t.Errorf("%d tables named stk_pushes… or in the rebuild schema, want the live one only", tables)
	}
}
