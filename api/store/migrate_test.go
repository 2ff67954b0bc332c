package store_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
)

// Services start together and all migrate: the session lock makes them
// take turns, and each finds the schema as the first one left it.
func TestMigrateConcurrent(t *testing.T) {
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
