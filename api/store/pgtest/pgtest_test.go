package pgtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

func TestMain(m *testing.M) { Main(m) }

func exists(t *testing.T, name string) bool {
	t.Helper()
	var n int
	if err := admin.QueryRow("SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func TestNew(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		db := New(t)
		if err := db.Get(&name, "SELECT current_database()"); err != nil {
			t.Fatal(err)
		}
		if !nameRE.MatchString(name) {
			t.Errorf("database %q does not match %v", name, nameRE)
		}
		// Migrated: the read model's table is there and empty.
		var n int
		if err := db.Get(&n, "SELECT count(*) FROM stk_pushes"); err != nil {
			t.Fatalf("not migrated: %v", err)
		}
		if !exists(t, name) {
			t.Fatalf("database %s not listed", name)
		}
	})
	if errs := waitDrops(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if exists(t, name) {
		t.Errorf("database %s still exists after the test's cleanup", name)
	}
}

func TestNewURL(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		u := NewURL(t)
		// A connection the code under test leaves open must not stop the drop.
		db, err := sqlx.Open("postgres", u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		if err := db.Get(&name, "SELECT current_database()"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec("INSERT INTO stk_pushes (tracking_id, client, phone_number, amount, reference, created_at, updated_at) VALUES (gen_random_uuid(), 'c', '254700000000', 1, 'r', now(), now())"); err != nil {
			t.Fatalf("not migrated: %v", err)
		}
	})
	if errs := waitDrops(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if exists(t, name) {
		t.Errorf("database %s still exists after the test's cleanup", name)
	}
}

// A drop that waits long for Postgres (each DROP DATABASE waits for a
// checkpoint of the whole server) does not hold the test it belongs to,
// and does not fail it: it finishes in the background, and Main waits for
// it before the binary exits.
func TestSlowDropDoesNotHoldTheTest(t *testing.T) {
	waitDrops() // the earlier tests' drops read dropNow
	release := make(chan struct{})
	var finished atomic.Bool
	dropNow = func(ctx context.Context, name string) error {
		select {
		case <-release:
		case <-ctx.Done():
		case <-time.After(time.Minute): // before drops ran in the background
		}
		defer finished.Store(true)
		return drop(ctx, name)
	}
	t.Cleanup(func() { dropNow = drop })

	var name string
	t.Run("inner", func(t *testing.T) {
		if err := New(t).Get(&name, "SELECT current_database()"); err != nil {
			t.Fatal(err)
		}
	})
	if finished.Load() {
		t.Fatal("the test waited for its database's drop")
	}
	close(release)
	if errs := waitDrops(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if !finished.Load() || exists(t, name) {
		t.Errorf("database %s not dropped after the test", name)
	}
}

// The binary's wait for its drops is bounded: a drop still under way when
// the budget runs out is ended and reported, not waited for.
func TestFinishDropsEndsWhatIsLeft(t *testing.T) {
	waitDrops()
	dropNow = func(ctx context.Context, name string) error {
		<-ctx.Done() // a checkpoint that never ends
		return fmt.Errorf("drop database %s: %w", name, ctx.Err())
	}
	t.Cleanup(func() {
		dropNow = drop
		dropsCtx, cancelDrops = context.WithCancel(context.Background())
	})
	var name string
	t.Run("inner", func(t *testing.T) {
		if err := New(t).Get(&name, "SELECT current_database()"); err != nil {
			t.Fatal(err)
		}
	})
	errs := finishDrops(10 * time.Millisecond)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), name) {
		t.Fatalf("errors %v, want one naming %s", errs, name)
	}
	if err := drop(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

func TestParallelDatabasesAreSeparate(t *testing.T) {
	names := make(chan string, 4)
	t.Run("group", func(t *testing.T) {
		for i := 0; i < 4; i++ {
			t.Run("db", func(t *testing.T) {
				t.Parallel()
				db := New(t)
				var name string
				if err := db.Get(&name, "SELECT current_database()"); err != nil {
					t.Fatal(err)
				}
				names <- name
			})
		}
	})
	close(names)
	seen := map[string]bool{}
	for n := range names {
		if seen[n] {
			t.Errorf("database %s handed out twice", n)
		}
		seen[n] = true
	}
	if len(seen) != 4 {
		t.Errorf("got %d databases, want 4", len(seen))
	}
}

func TestDropStale(t *testing.T) {
	New(t) // set up
	now := time.Now()
	old := newName(now.Add(-2 * staleAfter))
	fresh := newName(now.Add(-time.Minute))
	for _, n := range []string{old, fresh} {
		if _, err := admin.Exec("CREATE DATABASE " + pq.QuoteIdentifier(n) + " TEMPLATE template0"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = drop(context.Background(), fresh); _ = drop(context.Background(), old) })
	if err := dropStale(context.Background(), now); err != nil {
		t.Fatal(err)
	}
	if exists(t, old) {
		t.Errorf("stale %s not dropped", old)
	}
	if !exists(t, fresh) {
		t.Errorf("%s, a database a running test may use, was dropped", fresh)
	}
}

func TestDatabaseURL(t *testing.T) {
	for _, tc := range []struct{ base, want string }{
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres://postgres@127.0.0.1:5432/stkgate_t_1?sslmode=disable"},
		{"postgres://u:p%40ss@db.example:6543/?sslmode=require", "postgres://u:p%40ss@db.example:6543/stkgate_t_1?sslmode=require"},
		{"postgresql://u@h", "postgresql://u@h/stkgate_t_1"},
		{"host=h user=u dbname=other", "host=h user=u dbname=other dbname=stkgate_t_1"},
	} {
		got, err := databaseURL(tc.base, "stkgate_t_1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("databaseURL(%q) (-want +got):\n%s", tc.base, diff)
		}
	}
	if _, err := databaseURL("postgres://u:secret@h:x/", "d"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("bad URL: err = %v, want an error that does not echo the password", err)
	}
}

// The fallback when no Postgres is configured or local: a server of our own.
func TestStartServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, dir, db, err := startServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = db.Close()
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	}()
	var v string
	if err := db.QueryRow("SHOW server_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if s.Port() == 5432 {
		t.Errorf("own server on 5432")
	}
	t.Logf("own server %s on port %d", v, s.Port())
}
