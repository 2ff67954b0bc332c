package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// Under Main a test's database is used again by a later test of the same
// binary instead of being dropped, once it is as a fresh copy would be:
// every CREATE DATABASE copies some 7 MB of catalogs through the WAL, and
// in Postgres 15 every DROP DATABASE waits for a checkpoint of the whole
// server. Per make test run the copies and drops cost the shared Postgres
// some 60 of its 80 CPU-seconds.
//
// When a test ends its database is, in the background:
//  1. cut off: every session on it is ended, and it is renamed (a fresh
//     name, as a new database gets), so that nothing the test left
//     running can reach the next test's data by the old URL;
//  2. checked: its catalog (schemas, tables, columns, constraints,
//     indexes, triggers, functions, types, rules, policies, extensions,
//     the database's own settings and grants) must be the reference's,
//     that of a fresh copy, and so must the rows of the tables a fresh
//     copy has rows in (the migrations' bookkeeping);
//  3. emptied: every other table truncated, every sequence set back to
//     where the fresh copy had it.
//
// A database that fails any step (a test dropped a schema, added a
// trigger, renamed a table) is dropped as before.
var (
	// reuse turns reuse on; pgtest's own tests of drops turn it off.
	reuse  atomic.Bool
	reused atomic.Int64 // databases handed out again

	idleMu sync.Mutex
	idle   []string // databases reset, ready for the next test
	// resetting counts the databases being reset: a test that finds none
	// idle waits for them rather than have a database copied, which costs
	// more (in a package whose tests run one after another, the next test
	// starts while the last one's database is being reset).
	resetting   int
	idleChanged = make(chan struct{}) // closed and replaced when either changes

	refOnce sync.Once
	ref     *shape // a fresh copy's, taken from the first one made
	refErr  error
)

// maxIdle bounds the databases kept for reuse; more are dropped. Tests of
// a package run -parallel at a time (8 under make test).
const maxIdle = 16

func init() { reuse.Store(true) }

// takeIdle returns a database ready for reuse, waiting for those being
// reset when none is; false when there is none to wait for.
func takeIdle(ctx context.Context) (string, bool) {
	idleMu.Lock()
	for len(idle) == 0 {
		if resetting == 0 {
			idleMu.Unlock()
			return "", false
		}
		changed := idleChanged
		idleMu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return "", false
		}
		idleMu.Lock()
	}
	name := idle[len(idle)-1]
	idle = idle[:len(idle)-1]
	idleMu.Unlock()
	reused.Add(1)
	return name, true
}

// beginReset counts a database about to be reset, and says whether to
// reset it (reuse is on and the reference shape is known) or drop it.
func beginReset() bool {
	idleMu.Lock()
	defer idleMu.Unlock()
	if !reuse.Load() || ref == nil {
		return false
	}
	resetting++
	return true
}

// endReset ends beginReset: name, reset if ok, is kept for reuse unless
// reuse has been turned off or maxIdle are kept already. It says whether
// name was kept; if not, it is the caller's to drop.
func endReset(name string, ok bool) bool {
	idleMu.Lock()
	defer idleMu.Unlock()
	resetting--
	close(idleChanged)
	idleChanged = make(chan struct{})
	if !ok || !reuse.Load() || len(idle) >= maxIdle {
		return false
	}
	idle = append(idle, name)
	return true
}

// takeAllIdle empties the pool, for the drops at the binary's end.
func takeAllIdle() []string {
	idleMu.Lock()
	defer idleMu.Unlock()
	names := idle
	idle = nil
	return names
}

// shape is what a fresh copy of the template looks like: its catalog's
// fingerprint, the tables a test's rows go to, the rows of the others,
// and its sequences' positions.
type shape struct {
	catalog  string
	truncate []string          // tables empty in a fresh copy, quoted
	kept     map[string]string // table (quoted) → its rows' digest
	seqs     []sequence
}

type sequence struct {
	name   string // quoted
	value  int64
	called bool
}

// captureRef takes the reference shape from u, a fresh copy, once.
func captureRef(ctx context.Context, u string) error {
	refOnce.Do(func() {
		refErr = withConn(ctx, u, func(c *sql.Conn) error {
			s, err := capture(ctx, c)
			ref = s
			return err
		})
		if refErr != nil {
			refErr = fmt.Errorf("the shape of a fresh database: %w", refErr)
		}
	})
	return refErr
}

// withConn runs f on one session to the database at u.
func withConn(ctx context.Context, u string, f func(*sql.Conn) error) error {
	db, err := sql.Open("postgres", u)
	if err != nil {
		return err
	}
	defer db.Close()
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}

func capture(ctx context.Context, c *sql.Conn) (*shape, error) {
	s := &shape{kept: map[string]string{}}
	if err := c.QueryRowContext(ctx, catalogQuery).Scan(&s.catalog); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	tables, err := strings1(ctx, c, `SELECT c.oid::regclass::text FROM pg_class c
		WHERE c.relkind IN ('r', 'p') AND c.relnamespace IN (`+userSchemas+`) ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("tables: %w", err)
	}
	for _, t := range tables {
		var rows bool
		if err := c.QueryRowContext(ctx, "SELECT EXISTS (SELECT FROM "+t+")").Scan(&rows); err != nil {
			return nil, fmt.Errorf("rows of %s: %w", t, err)
		}
		if !rows {
			s.truncate = append(s.truncate, t)
			continue
		}
		d, err := digest(ctx, c, t)
		if err != nil {
			return nil, err
		}
		s.kept[t] = d
	}
	rows, err := c.QueryContext(ctx, `SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value, start_value), last_value IS NOT NULL
		FROM pg_sequences ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("sequences: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var q sequence
		if err := rows.Scan(&q.name, &q.value, &q.called); err != nil {
			return nil, fmt.Errorf("sequences: %w", err)
		}
		s.seqs = append(s.seqs, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sequences: %w", err)
	}
	return s, nil
}

// digest is the digest of table's rows, in an order of their own.
func digest(ctx context.Context, c *sql.Conn, table string) (string, error) {
	var d string
	q := "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM " + table + " t"
	if err := c.QueryRowContext(ctx, q).Scan(&d); err != nil {
		return "", fmt.Errorf("rows of %s: %w", table, err)
	}
	return d, nil
}

func strings1(ctx context.Context, c *sql.Conn, q string) ([]string, error) {
	rows, err := c.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// errChanged: a database that is not as a fresh copy and cannot be made so
// by emptying its tables.
var errChanged = errors.New("changed by its test")

// reset makes the database name, whose test has ended, ready for another
// and returns its new name. On an error the database is left to be
// dropped under the name returned (its old one if the rename failed).
func reset(ctx context.Context, name string) (string, error) {
	if ref == nil {
		return name, errors.New("no reference shape")
	}
	// pg_terminate_backend waits up to 5 s for each session to end.
	if _, err := admin.ExecContext(ctx, `SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()`, name); err != nil {
		return name, fmt.Errorf("end the sessions on %s: %w", name, err)
	}
	// Refused while a session is on it: one that came back in between.
	fresh := newName(time.Now())
	if _, err := admin.ExecContext(ctx, "ALTER DATABASE "+pq.QuoteIdentifier(name)+" RENAME TO "+pq.QuoteIdentifier(fresh)); err != nil {
		return name, fmt.Errorf("rename %s: %w", name, err)
	}
	u, err := databaseURL(adminURL, fresh)
	if err != nil {
		return fresh, err
	}
	err = withConn(ctx, u, func(c *sql.Conn) error {
		var catalog string
		if err := c.QueryRowContext(ctx, catalogQuery).Scan(&catalog); err != nil {
			return fmt.Errorf("catalog: %w", err)
		}
		if catalog != ref.catalog {
			return fmt.Errorf("catalog %w", errChanged)
		}
		for t, want := range ref.kept {
			d, err := digest(ctx, c, t)
			if err != nil {
				return err
			}
			if d != want {
				return fmt.Errorf("rows of %s %w", t, errChanged)
			}
		}
		stmts := make([]string, 0, 1+len(ref.seqs))
		if len(ref.truncate) > 0 {
			stmts = append(stmts, "TRUNCATE "+strings.Join(ref.truncate, ", "))
		}
		for _, q := range ref.seqs {
			stmts = append(stmts, fmt.Sprintf("SELECT setval(%s, %d, %t)", pq.QuoteLiteral(q.name), q.value, q.called))
		}
		// One round trip, one implicit transaction.
		if _, err := c.ExecContext(ctx, strings.Join(stmts, ";\n")); err != nil {
			return fmt.Errorf("empty it: %w", err)
		}
		return nil
	})
	if err != nil {
		return fresh, fmt.Errorf("reuse %s (was %s): %w", fresh, name, err)
	}
	return fresh, nil
}

// userSchemas selects the schemas a test's objects may be in.
const userSchemas = `SELECT oid FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema')
	AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp%'`

// catalogQuery is a digest of what a test may change in its database's
// catalog, names and definitions (not object ids, which differ between
// copies).
const catalogQuery = `WITH ns AS (` + userSchemas + `)
SELECT md5(coalesce(string_agg(item, E'\n' ORDER BY item), '')) FROM (
	SELECT concat_ws(' ', 'schema', n.nspname, n.nspowner::regrole, n.nspacl) FROM pg_namespace n WHERE n.oid IN (SELECT oid FROM ns)
	UNION ALL
	SELECT concat_ws(' ', 'rel', c.oid::regclass, c.relkind, c.relpersistence, c.relowner::regrole, c.relacl,
		c.relrowsecurity, c.relforcerowsecurity, c.reloptions)
	FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT concat_ws(' ', 'col', a.attrelid::regclass, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
		a.attnotnull, a.attisdropped, a.attidentity, a.attgenerated, a.attacl, pg_get_expr(d.adbin, d.adrelid))
	FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	WHERE c.relnamespace IN (SELECT oid FROM ns) AND a.attnum > 0
	UNION ALL
	SELECT concat_ws(' ', 'con', conrelid::regclass, contypid::regtype, conname, pg_get_constraintdef(oid), convalidated)
	FROM pg_constraint WHERE connamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT concat_ws(' ', 'idx', pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready)
	FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT concat_ws(' ', 'trg', pg_get_triggerdef(t.oid), t.tgenabled)
	FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal AND c.relnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT concat_ws(' ', 'fn', p.oid::regprocedure, p.prokind, p.prorettype::regtype, p.provolatile, p.prosecdef,
		p.proconfig, p.proacl, md5(p.prosrc))
	FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT concat_ws(' ', 'type', t.oid::regtype, t.typtype) FROM pg_type t WHERE t.typnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT concat_ws(' ', 'enum', e.enumtypid::regtype, e.enumlabel, e.enumsortorder) FROM pg_enum e
	JOIN pg_type t ON t.oid = e.enumtypid WHERE t.typnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT concat_ws(' ', 'seq', s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
	FROM pg_sequence s
	UNION ALL
	SELECT concat_ws(' ', 'rule', r.ev_class::regclass, r.rulename, pg_get_ruledef(r.oid), r.ev_enabled)
	FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE c.relnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT concat_ws(' ', 'policy', p.polrelid::regclass, p.polname, p.polcmd, p.polpermissive, p.polroles,
		pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)) FROM pg_policy p
	UNION ALL
	SELECT concat_ws(' ', 'ext', extname, extversion) FROM pg_extension
	UNION ALL
	SELECT concat_ws(' ', 'publication', pubname) FROM pg_publication
	UNION ALL
	SELECT concat_ws(' ', 'event trigger', evtname) FROM pg_event_trigger
	UNION ALL
	SELECT concat_ws(' ', 'large objects', count(*)) FROM pg_largeobject_metadata
	UNION ALL
	SELECT concat_ws(' ', 'database', datdba::regrole, datconnlimit, datallowconn, datistemplate, datacl)
	FROM pg_database WHERE datname = current_database()
	UNION ALL
	SELECT concat_ws(' ', 'setting', setrole, setconfig) FROM pg_db_role_setting
	WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) items(item)`
