package store_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
)

// Services start together and all migrate: the session lock makes them
// take turns, and each finds the schema as the first one left it.
func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := pgtest.NewURL(t)
	db, err := store.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// pgtest migrated it; start from nothing.
	db.MustExec("DROP SCHEMA public CASCADE; CREATE SCHEMA public")

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := store.Open(ctx, u)
			if err != nil {
				errs <- err
				return
			}
			defer db.Close()
			errs <- store.Migrate(ctx, db.DB)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Migrate: %v", err)
		}
	}
	var applied int
	if err := db.Get(&applied, "SELECT count(*) FROM stkgate_schema_migrations WHERE version_id > 0"); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations found: %v", err)
	}
	if applied != len(files) {
		t.Errorf("%d migrations recorded, want %d", applied, len(files))
	}
	if err := store.New(db).Ping(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.Get(&n, "SELECT count(*) FROM stk_pushes"); err != nil {
		t.Fatalf("table missing after concurrent migrations: %v", err)
	}
}

func TestOpenBadURL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, u := range []string{
		"postgres://postgres:hunter2@127.0.0.1:1/x?sslmode=disable&connect_timeout=1",
		"postgres://postgres:hunter2@127.0.0.1:bad/x",
	} {
		db, err := store.Open(ctx, u)
		if err == nil {
			db.Close()
			t.Fatalf("Open(%q) succeeded", u)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open's error shows the password: %v", err)
		}
	}
}

// rewindTo makes a migrated database look like one at version v whose
// later migrations never ran: their indexes and tables dropped, their rows
// gone.
func rewindTo(t *testing.T, db *sqlx.DB, v int, indexes ...string) {
	t.Helper()
	for _, ix := range indexes {
		db.MustExec("DROP INDEX IF EXISTS " + ix)
	}
	if v < 10 {
		db.MustExec("ALTER TABLE api_clients DROP COLUMN IF EXISTS callback_url_allowed")
	}
	if v < 9 {
		db.MustExec("DROP TABLE IF EXISTS webhook_attempts, webhook_deliveries, webhook_endpoints")
	}
	db.MustExec("DELETE FROM stkgate_schema_migrations WHERE version_id > $1", v)
}

func insertPaid(t *testing.T, db *sqlx.DB, receipt string) {
	t.Helper()
	db.MustExec(`INSERT INTO stk_pushes (tracking_id, client, phone_number, amount, reference,
		status, response_code, transaction_code, stage, created_at, updated_at)
		VALUES (gen_random_uuid(), 'c', '254708374149', 10, 'r', 1, '0', $1, 2, now(), now())`, receipt)
}

func receiptIndexValid(t *testing.T, db *sqlx.DB) (exists, valid bool) {
	t.Helper()
	var v []bool
	if err := db.Select(&v, `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE c.relname = 'stk_pushes_transaction_code_key'`); err != nil {
		t.Fatal(err)
	}
	return len(v) == 1, len(v) == 1 && v[0]
}

// Migration 6 makes receipts unique. A database that already holds one
// receipt on two payments cannot take the index: the migration says which
// receipt and where the operator's way out is written, and leaves nothing
// half-built; once the operator has reconciled the payments, it runs.
// A build cut off earlier (an invalid index left by CREATE INDEX
// CONCURRENTLY) is rebuilt, not tripped over.
func TestMigrateUniqueReceipts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	rewindTo(t, db, 5, "stk_pushes_transaction_code_key", "stk_pushes_client_queued_idx")
	insertPaid(t, db, "SJK4ABC123")
	insertPaid(t, db, "sjk4abc123")

	err := store.Migrate(ctx, db.DB)
	if err == nil {
		t.Fatal("Migrate succeeded over a receipt held by two payments")
	}
	for _, want := range []string{"SJK4ABC123", "docs/OPERATIONS.md"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Migrate's error %q does not name %q", err, want)
		}
	}
	if exists, _ := receiptIndexValid(t, db); exists {
		t.Error("a failed migration left the receipt index behind")
	}

	// An earlier concurrent build that failed left an invalid index.
	if _, err := db.Exec(`CREATE UNIQUE INDEX CONCURRENTLY stk_pushes_transaction_code_key
		ON stk_pushes (upper(transaction_code)) WHERE transaction_code IS NOT NULL`); err == nil {
		t.Fatal("the index was built over a duplicate receipt")
	}
	if exists, valid := receiptIndexValid(t, db); !exists || valid {
		t.Fatalf("set-up: want an invalid index, have exists=%v valid=%v", exists, valid)
	}

	db.MustExec("UPDATE stk_pushes SET transaction_code = NULL WHERE transaction_code = 'sjk4abc123'")
	if err := store.Migrate(ctx, db.DB); err != nil {
		t.Fatalf("Migrate after the duplicate was reconciled: %v", err)
	}
	if exists, valid := receiptIndexValid(t, db); !exists || !valid {
		t.Errorf("receipt index exists=%v valid=%v, want a valid one", exists, valid)
	}
	insertPaid(t, db, "SJK4ABC124")
	if _, err := db.Exec(`INSERT INTO stk_pushes (tracking_id, client, phone_number, amount, reference,
		status, response_code, transaction_code, stage, created_at, updated_at)
		VALUES (gen_random_uuid(), 'c', '254708374149', 10, 'r', 1, '0', 'sjk4abc124', 2, now(), now())`); err == nil {
		t.Error("the index let a second payment take a receipt")
	}
}

// A service migrates under its start-up deadline, and a CREATE INDEX
// CONCURRENTLY waits for every open transaction on the table: cut off by
// that deadline, each start would leave an invalid index and the next one
// begin again, for ever. A migration runs to its end whatever the caller's
// deadline; only a cancellation (the service stopping) cuts it off.
func TestMigrateOutlivesTheStartDeadline(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	rewindTo(t, db, 5, "stk_pushes_transaction_code_key", "stk_pushes_client_queued_idx")
	// A writer's transaction open across the deadline.
	tx := openWriter(t, db)

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- store.Migrate(ctx, db.DB) }()
	<-ctx.Done()
	select {
	case err := <-done:
		t.Fatalf("Migrate returned at the deadline, before the open transaction ended: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if exists, valid := receiptIndexValid(t, db); !exists || !valid {
		t.Errorf("receipt index exists=%v valid=%v, want a valid one", exists, valid)
	}
}

// A service stopping (its context cancelled) cuts a waiting migration off.
func TestMigrateStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	rewindTo(t, db, 5, "stk_pushes_transaction_code_key", "stk_pushes_client_queued_idx")
	openWriter(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- store.Migrate(ctx, db.DB) }()
	time.AfterFunc(300*time.Millisecond, cancel)
	select {
	case err := <-done:
		if err == nil {
			t.Error("Migrate succeeded while a transaction it waits for was open")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Migrate went on after its context was cancelled")
	}
}

// openWriter is a writer's transaction on stk_pushes left open (rolled back
// when the test ends): what an index built CONCURRENTLY waits for.
func openWriter(t *testing.T, db *sqlx.DB) *sqlx.Tx {
	t.Helper()
	tx, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	tx.MustExec(`INSERT INTO stk_pushes (tracking_id, client, phone_number, amount, reference, stage, created_at, updated_at)
		VALUES (gen_random_uuid(), 'c', '254708374149', 10, 'r', 0, now(), now())`)
	return tx
}
