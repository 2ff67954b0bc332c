// Package pgtest gives each test a fresh, migrated Postgres database of its
// own, dropped when the test ends, the way httptest gives it a server.
// Under Main the drop runs in the background after the test, and Main waits
// for it before the binary exits.
//
// It finds Postgres in this order: DATABASE_URL (a database on a server
// where that role may create databases); else the local
// postgres://postgres@127.0.0.1:5432/test if it answers; else a throwaway
// server it starts once per test binary with pgserver. A package whose tests
// may start that server should stop it at the end with
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// (without it the server dies with the test binary and its files stay in
// the temp directory).
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events/testkit/pgserver"
)

// LocalURL is the Postgres tried when DATABASE_URL is not set.
const LocalURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// DBPrefix starts the name of every database pgtest creates.
const DBPrefix = "stkgate_t_"

// staleAfter is the age past which a test database left behind by a killed
// test binary is dropped when the next binary starts. No test runs that long.
const staleAfter = time.Hour

const opTimeout = 30 * time.Second

var (
	setupOnce sync.Once
	setupErr  error
	adminURL  string  // maintenance database: where CREATE DATABASE runs
	admin     *sql.DB // connection pool to adminURL
	server    *pgserver.Server
	serverDir string
)

// New returns a connection pool to a fresh, migrated database for t, closed
// and dropped in t.Cleanup.
func New(t testing.TB) *sqlx.DB {
	t.Helper()
	db, _ := newDB(t)
	return db
}

// NewURL is New for code under test that connects by itself: it returns the
// URL of a fresh, migrated database for t, dropped in t.Cleanup (open
// connections to it are cut off then).
func NewURL(t testing.TB) string {
	t.Helper()
	db, u := newDB(t)
	_ = db.Close()
	return u
}

func newDB(t testing.TB) (*sqlx.DB, string) {
	t.Helper()
	u := create(t)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	db, err := store.Open(ctx, u)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	// Registered after the drop, so it runs before it.
	t.Cleanup(func() { _ = db.Close() })
	return db, u
}

// Each test's database is a copy of one migrated once per test binary, the
// template, rather than an empty database migrated anew: a copy costs one
// CREATE DATABASE, the migrations some forty statements and commits (about
// a second each time on a loaded 2-core machine).
var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// migrated returns the name of the test binary's migrated template,
// making it the first time.
func migrated(ctx context.Context) (string, error) {
	templateOnce.Do(func() { templateName, templateErr = makeTemplate(ctx) })
	return templateName, templateErr
}

func makeTemplate(ctx context.Context) (string, error) {
	name := newName(time.Now())
	if err := createDatabase(ctx, name, "template0"); err != nil {
		return "", err
	}
	u, err := databaseURL(adminURL, name)
	if err != nil {
		return "", err
	}
	db, err := store.Open(ctx, u)
	if err != nil {
		return "", fmt.Errorf("open the template %s: %w", name, err)
	}
	err = store.Migrate(ctx, db.DB)
	// Closed before any copy: CREATE DATABASE refuses a template someone
	// is connected to (it waits up to 5 s for a closing session to go).
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = drop(ctx, name)
		return "", fmt.Errorf("migrate the template %s: %w", name, err)
	}
	return name, nil
}

// createDatabase creates name from template. Test data need not survive a
// crash of Postgres: the database's sessions (and this one's CREATE) commit
// without waiting for the WAL's flush, which on a machine with fsync on
// halves a CREATE DATABASE and takes the disk's wait out of every test's
// writes.
func createDatabase(ctx context.Context, name, template string) error {
	conn, err := admin.Conn(ctx)
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	defer conn.Close()
	q := pq.QuoteIdentifier(name)
	for _, stmt := range []string{
		"SET synchronous_commit = off",
		"CREATE DATABASE " + q + " TEMPLATE " + pq.QuoteIdentifier(template),
		"ALTER DATABASE " + q + " SET synchronous_commit = off",
	} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("create database %s: %w", name, err)
		}
	}
	return nil
}

// Main runs the tests of a package and then stops the Postgres server
// pgtest started, if it started one. Call it from TestMain.
func Main(m *testing.M) {
	mainRuns.Store(true)
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func shutdown() error {
	var errs []error
	// A database whose drop failed is no test's failure: the sweep of the
	// next binary to start drops it once it is staleAfter old (dropStale).
	// A server pgtest started is deleted with its databases: nothing to
	// wait for.
	budget := dropBudget
	if server != nil {
		budget = 0
	}
	for _, err := range finishDrops(budget) {
		fmt.Fprintf(os.Stderr, "pgtest: %v (left for a later run to drop)\n", err)
	}
	if templateName != "" && server == nil {
		ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
		if err := drop(ctx, templateName); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v (left for a later run to drop)\n", err)
		}
		cancel()
	}
	if admin != nil {
		errs = append(errs, admin.Close())
	}
	if server != nil {
		errs = append(errs, server.Stop())
		errs = append(errs, os.RemoveAll(serverDir))
	}
	return errors.Join(errs...)
}

// create makes a database for t, a copy of the migrated template, and
// returns its URL.
func create(t testing.TB) string {
	t.Helper()
	setupOnce.Do(func() { setupErr = setup() })
	if setupErr != nil {
		t.Fatalf("pgtest: %v", setupErr)
	}
	name := newName(time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	from, err := migrated(ctx)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := createDatabase(ctx, name, from); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if mainRuns.Load() {
			dropLater(name)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := dropNow(ctx, name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	u, err := databaseURL(adminURL, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

// A test's database is dropped after the test, in the background, when
// the package's TestMain is Main (which waits for the drops before the
// binary exits): in Postgres 15 every DROP DATABASE waits for a checkpoint
// of the whole server, which with fsync on and many tests writing took
// over 30 s in a CI run (the drop was cancelled and two tests that had
// passed failed), and a test waiting on it holds one of its package's
// -parallel slots. Without Main the drop is the test's own last step.
var (
	mainRuns atomic.Bool    // Main runs the tests: drops may outlive them
	drops    sync.WaitGroup // background drops under way
	// dropSlots bounds the drops under way at once, so that creating a
	// database never waits for all of the admin pool's connections.
	dropSlots = make(chan struct{}, 2)
	dropMu    sync.Mutex
	dropErrs  []error // background drops that failed
	// dropNow drops a database; tests slow it down.
	dropNow = drop
)

// dropTimeout bounds one background drop, and dropBudget the binary's
// wait at its end for those not done: nothing else waits on them, and a
// checkpoint on a loaded machine may take long; what is left then is left
// to the sweep.
const (
	dropTimeout = 3 * time.Minute
	dropBudget  = 2 * time.Minute
)

// dropsCtx ends the background drops once the binary stops waiting.
var dropsCtx, cancelDrops = context.WithCancel(context.Background())

// dropLater drops name in the background; waitDrops waits for it.
func dropLater(name string) {
	drops.Add(1)
	go func() {
		defer drops.Done()
		var err error
		select {
		case dropSlots <- struct{}{}:
			ctx, cancel := context.WithTimeout(dropsCtx, dropTimeout)
			err = dropNow(ctx, name)
			cancel()
			<-dropSlots
		case <-dropsCtx.Done():
			err = fmt.Errorf("drop database %s: not begun when the binary stopped waiting", name)
		}
		if err != nil {
			dropMu.Lock()
			dropErrs = append(dropErrs, err)
			dropMu.Unlock()
		}
	}()
}

// finishDrops waits up to budget for the background drops, then ends those
// left, and returns the failures.
func finishDrops(budget time.Duration) []error {
	done := make(chan struct{})
	go func() { drops.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(budget):
		cancelDrops()
		<-done
	}
	return dropFailures()
}

// waitDrops waits for the background drops and returns their failures.
func waitDrops() []error {
	drops.Wait()
	return dropFailures()
}

// dropFailures returns the background drops' failures so far, and
// forgets them.
func dropFailures() []error {
	dropMu.Lock()
	defer dropMu.Unlock()
	errs := dropErrs
	dropErrs = nil
	return errs
}

func drop(ctx context.Context, name string) error {
	if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// newName is a database name that carries its creation time, so that a
// later run can tell a leftover from a database a running test uses.
func newName(now time.Time) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return DBPrefix + strconv.FormatInt(now.Unix(), 10) + "_" + hex.EncodeToString(b[:])
}

var nameRE = regexp.MustCompile(`^` + DBPrefix + `(\d+)_[0-9a-f]+$`)

// dropStale drops the test databases of test binaries that were killed
// before their cleanup ran.
func dropStale(ctx context.Context, now time.Time) error {
	rows, err := admin.QueryContext(ctx, "SELECT datname FROM pg_database WHERE datname LIKE $1", DBPrefix+"%")
	if err != nil {
		return fmt.Errorf("list test databases: %w", err)
	}
	var stale []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return fmt.Errorf("list test databases: %w", err)
		}
		m := nameRE.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		sec, err := strconv.ParseInt(m[1], 10, 64)
		if err == nil && now.Sub(time.Unix(sec, 0)) > staleAfter {
			stale = append(stale, name)
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("list test databases: %w", err)
	}
	// Best effort: a leftover that will not drop now (a checkpoint slower
	// than opTimeout) is no reason to fail this binary's tests; a later
	// sweep tries again.
	for _, name := range stale {
		dctx, cancel := context.WithTimeout(ctx, opTimeout)
		if err := drop(dctx, name); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v (a leftover: a later run tries again)\n", err)
		}
		cancel()
	}
	return nil
}

// setup finds or starts a Postgres and opens the maintenance pool.
func setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	switch {
	case os.Getenv("DATABASE_URL") != "":
		adminURL = os.Getenv("DATABASE_URL")
		db, err := ping(ctx, adminURL)
		if err != nil {
			return fmt.Errorf("DATABASE_URL: %w", err)
		}
		admin = db
	default:
		if db, err := ping(ctx, LocalURL); err == nil {
			adminURL, admin = LocalURL, db
			break
		}
		s, dir, db, err := startServer(ctx)
		if err != nil {
			return err
		}
		server, serverDir, adminURL, admin = s, dir, s.URL("postgres"), db
	}
	// Many tests run in parallel, each creating and dropping a database.
	admin.SetMaxOpenConns(4)
	return dropStale(ctx, time.Now())
}

func ping(ctx context.Context, u string) (*sql.DB, error) {
	db, err := sql.Open("postgres", u)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// startServer starts a throwaway server in a new temp directory and
// connects to its maintenance database.
func startServer(ctx context.Context) (*pgserver.Server, string, *sql.DB, error) {
	dir, err := os.MkdirTemp("", "stkgate-pgtest-")
	if err != nil {
		return nil, "", nil, err
	}
	s, err := pgserver.Start(ctx, pgserver.Options{DataDir: dir, NoSync: true})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, "", nil, fmt.Errorf("no DATABASE_URL, nothing on %s, and starting Postgres failed: %w", LocalURL, err)
	}
	db, err := ping(ctx, s.URL("postgres"))
	if err != nil {
		_ = s.Stop()
		_ = os.RemoveAll(dir)
		return nil, "", nil, err
	}
	return s, dir, db, nil
}

// databaseURL is base pointing at database name instead: a URL with its
// path replaced, or a key=value string with dbname set.
func databaseURL(base, name string) (string, error) {
	if strings.Contains(base, "://") {
		u, err := url.Parse(base)
		if err != nil {
			return "", errors.New("unparsable database URL") // the URL may hold a password
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// lib/pq takes the last of repeated keys.
	return base + " dbname=" + name, nil
}
