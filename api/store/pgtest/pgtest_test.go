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
	noReuse(t)
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
	noReuse(t)
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

// noReuse turns reuse off for t: its databases are dropped.
func noReuse(t *testing.T) {
	reuse.Store(false)
	t.Cleanup(func() { reuse.Store(true) })
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

// oidOf is the database's oid, which stays when it is renamed.
func oidOf(t *testing.T, db *sqlx.DB) (oid int64, name string) {
	t.Helper()
	if err := db.QueryRow("SELECT oid, datname FROM pg_database WHERE datname = current_database()").Scan(&oid, &name); err != nil {
		t.Fatal(err)
	}
	return oid, name
}

func oidExists(t *testing.T, oid int64) bool {
	t.Helper()
	var n int
	if err := admin.QueryRow("SELECT count(*) FROM pg_database WHERE oid = $1", oid).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// contents is what a test can see of a database's data: every table's
// rows, and where each sequence goes next.
func contents(t *testing.T, db *sqlx.DB) map[string]string {
	t.Helper()
	var tables []string
	if err := db.Select(&tables, `SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname = 'public'`); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, tb := range tables {
		var rows string
		if err := db.Get(&rows, "SELECT coalesce(string_agg(t::text, ';' ORDER BY t::text), '') FROM "+tb+" t"); err != nil {
			t.Fatal(err)
		}
		got["table "+tb] = rows
	}
	var seqs []string
	if err := db.Select(&seqs, "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences"); err != nil {
		t.Fatal(err)
	}
	for _, q := range seqs {
		var next int64
		if err := db.Get(&next, "SELECT nextval($1)", q); err != nil {
			t.Fatal(err)
		}
		got["sequence "+q] = fmt.Sprint(next)
	}
	return got
}

// A database whose test only wrote rows is handed to a later test, as a
// fresh copy would be: its rows gone, its sequences back, the sessions
// the earlier test left open cut off and its old name gone, so that
// nothing left of that test reaches the new one's data.
func TestDatabaseIsReusedAsFresh(t *testing.T) {
	waitDrops()
	var (
		oid     int64
		oldName string
		leaked  *sqlx.DB
	)
	t.Run("first", func(t *testing.T) {
		db := New(t)
		oid, oldName = oidOf(t, db)
		db.MustExec(`INSERT INTO stk_pushes (tracking_id, client, phone_number, amount, reference, created_at, updated_at)
			VALUES (gen_random_uuid(), 'c', '254700000000', 1, 'r', now(), now())`)
		db.MustExec(`INSERT INTO api_clients (name) VALUES ('shop')`)
		contents(t, db) // moves every sequence on
		// Left open by the test: it is cut off when the test ends.
		leaked = sqlx.MustOpen("postgres", NewURLOf(t, oldName))
		leaked.SetMaxOpenConns(1)
		if err := leaked.Ping(); err != nil {
			t.Fatal(err)
		}
	})
	defer leaked.Close()
	if errs := waitDrops(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if !oidExists(t, oid) {
		t.Fatal("the database was dropped, not kept for reuse")
	}
	if exists(t, oldName) {
		t.Errorf("the database kept its name %s", oldName)
	}
	if _, err := leaked.Exec("INSERT INTO api_clients (name) VALUES ('late')"); err == nil {
		t.Error("a session the test left open wrote after its end")
	}

	// A fresh copy of the template, to compare with.
	ctx := context.Background()
	tmpl, err := migrated(ctx)
	if err != nil {
		t.Fatal(err)
	}
	freshName := newName(time.Now())
	if err := createDatabase(ctx, freshName, tmpl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drop(context.Background(), freshName) })
	fresh := sqlx.MustOpen("postgres", NewURLOf(t, freshName))
	defer fresh.Close()
	want := contents(t, fresh)

	before := reused.Load()
	t.Run("second", func(t *testing.T) {
		db := New(t)
		if got, _ := oidOf(t, db); got != oid {
			t.Fatalf("database %d handed out, want %d again", got, oid)
		}
		if reused.Load() != before+1 {
			t.Error("not counted as reused")
		}
		if diff := cmp.Diff(want, contents(t, db)); diff != "" {
			t.Errorf("reused database differs from a fresh copy (-fresh +reused):\n%s", diff)
		}
	})
}

// NewURLOf is the URL of database name on pgtest's server.
func NewURLOf(t *testing.T, name string) string {
	t.Helper()
	u, err := databaseURL(adminURL, name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// A database its test changed other than by writing rows is dropped, not
// handed to another test.
func TestChangedDatabaseIsDropped(t *testing.T) {
	type change struct {
		name   string
		change []string
	}
	cases := []change{
		{"a table added", []string{"CREATE TABLE extra (v int)"}},
		{"a table renamed", []string{"ALTER TABLE stk_pushes RENAME TO stk_pushes_aside"}},
		{"a column dropped", []string{"ALTER TABLE api_clients DROP COLUMN callback_url_allowed"}},
		{"a column dropped and added back", []string{"ALTER TABLE api_clients DROP COLUMN callback_url_allowed",
			"ALTER TABLE api_clients ADD COLUMN callback_url_allowed boolean NOT NULL DEFAULT false"}},
		{"a default changed", []string{"ALTER TABLE api_clients ALTER COLUMN callback_url_allowed SET DEFAULT true"}},
		{"an index dropped", []string{"DROP INDEX " + anIndex(t)}},
		{"a trigger", []string{`CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$`,
			`CREATE TRIGGER stamp BEFORE UPDATE ON stk_pushes FOR EACH ROW EXECUTE FUNCTION stamp()`}},
		{"a function", []string{`CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'`}},
		{"the schema made anew", []string{"DROP SCHEMA public CASCADE", "CREATE SCHEMA public"}},
		{"a migration forgotten", []string{"DELETE FROM stkgate_schema_migrations WHERE version_id = (SELECT max(version_id) FROM stkgate_schema_migrations)"}},
		{"a privilege revoked", []string{"REVOKE ALL ON stk_pushes FROM PUBLIC", "GRANT SELECT ON stk_pushes TO PUBLIC"}},
		{"a row-level security policy", []string{"ALTER TABLE stk_pushes ENABLE ROW LEVEL SECURITY"}},
		{"a setting of the database", []string{"DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET work_mem = ''1MB''', current_database()); END$$"}},
		{"a connection limit", []string{"DO $$BEGIN EXECUTE format('ALTER DATABASE %I CONNECTION LIMIT 50', current_database()); END$$"}},
		{"a sequence's increment", []string{"ALTER SEQUENCE " + aSequence(t) + " INCREMENT BY 2"}},
	}
	// The changes side by side (a drop waits for a checkpoint), then the
	// databases' fates.
	oids := make([]int64, len(cases))
	t.Run("changes", func(t *testing.T) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				db := New(t)
				oids[i], _ = oidOf(t, db)
				for _, s := range tc.change {
					if _, err := db.Exec(s); err != nil {
						t.Fatalf("%s: %v", s, err)
					}
				}
			})
		}
	})
	if errs := waitDrops(); len(errs) > 0 {
		t.Fatal(errs)
	}
	for i, tc := range cases {
		if oidExists(t, oids[i]) {
			t.Errorf("%s: the changed database was kept", tc.name)
		}
	}
}

// anIndex and aSequence name one of the migrated database's own.
func anIndex(t *testing.T) string {
	var name string
	if err := New(t).Get(&name, `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE c.relnamespace = 'public'::regnamespace AND NOT EXISTS (SELECT FROM pg_constraint WHERE conindid = i.indexrelid)
		ORDER BY 1 LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	return name
}

func aSequence(t *testing.T) string {
	var name string
	if err := New(t).Get(&name, `SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1 LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	return name
}
