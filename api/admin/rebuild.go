package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/stkgate/stkgate/api/projector"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

// rebuild-read-model: the read model (stk_pushes) rebuilt from the STK
// stream into a table of its own, then swapped in for the live one.
//
// The rebuilt table is made by the migrations themselves, run in a schema
// of its own (rebuildSchema, the only one on its connections' search_path),
// so that its columns, indexes, constraints and sequence are the ones a
// fresh database gets, named as the projector's error handling expects
// (store.classify knows the unique indexes by name). Events are applied by
// store.Apply through projector.Decode, as the projector applies them.
//
// The swap is one transaction that locks the live table (ACCESS
// EXCLUSIVE, at once: see swapOnce), applies the events stored since the
// copy, carries over what only Postgres knows (ids, updated_at), renames
// the live table and its indexes and sequence aside and moves the rebuilt
// one in. A projector write that waited on the lock resolves the table's
// name again once it gets it (Postgres re-checks a name whose lock it had
// to wait for), so it lands in the new table; every event it had committed
// to the old one is in the stream at or before the position read under the
// lock, and so in the new table too.

const (
	rebuildSchema = "stkgate_rebuild"
	// rebuildLockID is the advisory lock one rebuild holds, so that two
	// never run at once.
	rebuildLockID int64 = 0x73746b6761746501 // "stkgate\x01"
	// rebuildBatch is how many events one store.Apply takes: the
	// projector's largest batch (PROJECTOR_BATCH). What Apply makes of a
	// stream does not depend on where its batches end; larger ones took a
	// third less time than batches of 256.
	rebuildBatch = projector.MaxBatchSize
	// swapLockTimeout bounds each wait of the swap for the live table: the
	// api's reads queue behind a lock waited for, so it is short, and the
	// swap, rolled back, tries again (swapAttempts).
	swapLockTimeout = time.Second
	// listed is how many tracking ids of each kind of difference are shown.
	listed = 20
)

// swapAttempts is how often the swap tries to lock the live table before
// it gives up, nothing changed; a pause of up to a second between tries
// lets the transactions queued behind a try through.
var swapAttempts = 30

// rebuildHook, when set (tests), is called at each phase: "copied" once
// the stream up to its last sequence is in the rebuilt table, "locked" once
// the swap holds the live table, "caught-up" once the events stored until
// then are in the rebuilt table too.
var rebuildHook func(phase string)

// rebuildReport is what a rebuild did or, with --dry-run, would do.
type rebuildReport struct {
	events, applied, rejected, malformed int
	lastSeq                              uint64
	liveRows, rebuiltRows                int
	restored, corrected, unstreamed      []string // tracking ids, at most listed each
	restoredN, correctedN, unstreamedN   int
	schemaNotes                          []string
	copyTook, lockedFor                  time.Duration
}

func (c *cmd) rebuildReadModel(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("rebuild-read-model", flag.ContinueOnError)
	dryRun := fs.Bool("dry-run", false, "rebuild and compare, but do not swap")
	keepOld := fs.Bool("keep-old", true, "keep the replaced table as stk_pushes_old_<time>")
	dropUnstreamed := fs.Bool("drop-unstreamed", false, "drop the live rows of payments whose stk.requested the stream lacks, instead of keeping them")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	if c.db == nil || c.dbURL == "" {
		return errors.New("rebuild-read-model needs DATABASE_URL")
	}
	if c.js == nil {
		return errors.New("rebuild-read-model needs NATS_URL")
	}
	r := &rebuilder{cmd: c, dryRun: *dryRun, keepOld: *keepOld, dropUnstreamed: *dropUnstreamed}
	return r.run(ctx)
}

type rebuilder struct {
	*cmd
	dryRun, keepOld, dropUnstreamed bool

	live    string // the live table's schema
	liveSeq string // its id sequence, schema-qualified and quoted
	rdb     *sqlx.DB
	rstore  *store.Store
	cols    []string // the rebuilt table's columns but id and updated_at
	// liveDef and liveVersion are the live table's definition and the
	// migrations' version as checkSchema found them (definition).
	liveDef     string
	liveVersion int64
	rep         rebuildReport
}

// run rebuilds the read model, in named steps: under the advisory lock
// (lock), it finds the live table (findLive), makes the rebuild's schema
// and table afresh, copies the stream into it (copyAll), and then compares
// (a dry run) or swaps.
func (r *rebuilder) run(ctx context.Context) (err error) {
	// The advisory lock is a session's: one connection for the whole run.
	conn, err := r.db.Connx(ctx)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	defer conn.Close()
	if err := r.lock(ctx, conn); err != nil {
		return err
	}
	defer func() {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, rebuildLockID)
	}()
	if err := r.findLive(ctx, conn); err != nil {
		return err
	}
	// A rebuild cut off earlier left its schema: it is ours, and stale.
	if _, err := conn.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+rebuildSchema+` CASCADE`); err != nil {
		return fmt.Errorf("rebuild: drop a stale %s: %w", rebuildSchema, err)
	}
	defer func() {
		// Whatever happened, the rebuild schema goes: after a swap it
		// holds only the other tables the migrations made.
		if _, derr := conn.ExecContext(context.WithoutCancel(ctx), `DROP SCHEMA IF EXISTS `+rebuildSchema+` CASCADE`); derr != nil && err == nil {
			err = fmt.Errorf("rebuild: drop %s: %w", rebuildSchema, derr)
		}
	}()
	if _, err := conn.ExecContext(ctx, `CREATE SCHEMA `+rebuildSchema); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	if err := r.openRebuildDB(ctx); err != nil {
		return err
	}
	defer r.rdb.Close()
	if err := r.prepareTable(ctx, conn); err != nil {
		return err
	}
	if err := r.copyAll(ctx, conn); err != nil {
		return err
	}
	if r.dryRun {
		if err := r.compare(ctx, conn); err != nil {
			return err
		}
		r.print(false, "")
		return nil
	}
	return r.swap(ctx, conn)
}

// lock takes the rebuild's advisory lock on conn's session, or says that
// another rebuild holds it; run releases it.
func (r *rebuilder) lock(ctx context.Context, conn *sqlx.Conn) error {
	var got bool
	if err := conn.GetContext(ctx, &got, `SELECT pg_try_advisory_lock($1)`, rebuildLockID); err != nil {
		return fmt.Errorf("rebuild: lock: %w", err)
	}
	if !got {
		return errors.New("rebuild: another rebuild-read-model is running on this database")
	}
	return nil
}

// findLive finds the live table's schema and its id sequence.
func (r *rebuilder) findLive(ctx context.Context, conn *sqlx.Conn) error {
	if err := conn.GetContext(ctx, &r.live, `SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = 'stk_pushes'::regclass`); err != nil {
		return fmt.Errorf("rebuild: find the live table: %w", err)
	}
	if err := conn.GetContext(ctx, &r.liveSeq, `SELECT pg_get_serial_sequence('stk_pushes', 'id')`); err != nil {
		return fmt.Errorf("rebuild: find the live table's sequence: %w", err)
	}
	if r.live == rebuildSchema {
		return fmt.Errorf("rebuild: the live stk_pushes is in schema %s, the rebuild's own", rebuildSchema)
	}
	return nil
}

// copyAll fills the rebuilt table: the live rows the stream lacks
// (seedUnstreamed), the stream up to its last sequence, what was stored
// meanwhile, and the live ids carried over.
func (r *rebuilder) copyAll(ctx context.Context, conn *sqlx.Conn) error {
	stream, err := r.js.Stream(ctx, events.StreamName)
	if err != nil {
		return fmt.Errorf("rebuild: stream %s: %w", events.StreamName, err)
	}
	if err := r.seedUnstreamed(ctx, conn, stream); err != nil {
		return err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("rebuild: stream %s: %w", events.StreamName, err)
	}
	r.rep.lastSeq = info.State.LastSeq
	fmt.Fprintf(r.stderr, "rebuilding from %s up to sequence %d (%d messages)…\n", events.StreamName, info.State.LastSeq, info.State.Msgs)
	start := time.Now()
	if err := r.copyStream(ctx, 1, info.State.LastSeq); err != nil {
		return err
	}
	if rebuildHook != nil {
		rebuildHook("copied")
	}
	// Catch up with what was stored meanwhile, so that the locked pass
	// (and a dry run's comparison) has little left.
	if info, err = stream.Info(ctx); err != nil {
		return fmt.Errorf("rebuild: stream %s: %w", events.StreamName, err)
	}
	if err := r.copyStream(ctx, r.rep.lastSeq+1, info.State.LastSeq); err != nil {
		return err
	}
	r.rep.lastSeq = max(r.rep.lastSeq, info.State.LastSeq)
	r.rep.copyTook = time.Since(start)
	// Most ids are carried over now, so that the locked pass has little
	// left to do.
	return r.carryOver(ctx, conn)
}

func (r *rebuilder) liveTable() string { return pq.QuoteIdentifier(r.live) + ".stk_pushes" }

// carryOver gives each rebuilt row of a payment the live table has its live
// id, and its live updated_at when the events left it as the live row is.
func (r *rebuilder) carryOver(ctx context.Context, q sqlx.ExecerContext) error {
	_, err := q.ExecContext(ctx, `UPDATE `+rebuildSchema+`.stk_pushes r
		SET id = l.id,
		    updated_at = CASE WHEN (`+r.eventCols("r")+`) IS NOT DISTINCT FROM (`+r.eventCols("l")+`) THEN l.updated_at ELSE r.updated_at END
		FROM `+r.liveTable()+` l
		WHERE l.tracking_id = r.tracking_id
		  AND (r.id <> l.id OR (r.updated_at <> l.updated_at AND (`+r.eventCols("r")+`) IS NOT DISTINCT FROM (`+r.eventCols("l")+`)))`)
	if err != nil {
		return fmt.Errorf("rebuild: carry ids over: %w", err)
	}
	return nil
}

// compare counts the rows and lists the differences between the live
// table and the rebuilt one.
func (r *rebuilder) compare(ctx context.Context, q sqlx.QueryerContext) error {
	if err := sqlx.GetContext(ctx, q, &r.rep.liveRows, `SELECT count(*) FROM `+r.liveTable()); err != nil {
		return fmt.Errorf("rebuild: compare: %w", err)
	}
	if err := sqlx.GetContext(ctx, q, &r.rep.rebuiltRows, `SELECT count(*) FROM `+rebuildSchema+`.stk_pushes`); err != nil {
		return fmt.Errorf("rebuild: compare: %w", err)
	}
	var rows []struct {
		ID   string `db:"tracking_id"`
		Kind string `db:"kind"`
	}
	err := sqlx.SelectContext(ctx, q, &rows, `
		SELECT COALESCE(r.tracking_id, l.tracking_id)::text AS tracking_id,
		       CASE WHEN u.tracking_id IS NOT NULL OR r.tracking_id IS NULL THEN 'unstreamed' WHEN l.tracking_id IS NULL THEN 'restored' ELSE 'corrected' END AS kind
		  FROM `+rebuildSchema+`.stk_pushes r FULL JOIN `+r.liveTable()+` l ON l.tracking_id = r.tracking_id
		  LEFT JOIN `+unstreamedTable+` u ON u.tracking_id = COALESCE(r.tracking_id, l.tracking_id)
		 WHERE u.tracking_id IS NOT NULL OR r.tracking_id IS NULL OR l.tracking_id IS NULL
		    OR (`+r.eventCols("r")+`) IS DISTINCT FROM (`+r.eventCols("l")+`)
		 ORDER BY 2, 1`)
	if err != nil {
		return fmt.Errorf("rebuild: compare: %w", err)
	}
	for _, row := range rows {
		list, n := &r.rep.corrected, &r.rep.correctedN
		switch row.Kind {
		case "restored":
			list, n = &r.rep.restored, &r.rep.restoredN
		case "unstreamed":
			list, n = &r.rep.unstreamed, &r.rep.unstreamedN
		}
		*n++
		if len(*list) < listed {
			*list = append(*list, row.ID)
		}
	}
	return nil
}

func (r *rebuilder) print(swapped bool, old string) {
	w := r.stdout
	p := r.rep
	fmt.Fprintf(w, "stream %s up to sequence %d: %d messages, %d events applied, %d rejected and %d malformed (left out, as the projector left them out)\n",
		events.StreamName, p.lastSeq, p.events, p.applied, p.rejected, p.malformed)
	fmt.Fprintf(w, "live table: %d rows; rebuilt: %d rows\n", p.liveRows, p.rebuiltRows)
	list := func(what string, n int, ids []string) {
		fmt.Fprintf(w, "%s: %d\n", what, n)
		for _, id := range ids {
			fmt.Fprintf(w, "  %s\n", id)
		}
		if n > len(ids) {
			fmt.Fprintf(w, "  … and %d more\n", n-len(ids))
		}
	}
	list("rows the live table lacks (restored)", p.restoredN, p.restored)
	list("rows the events leave otherwise (corrected)", p.correctedN, p.corrected)
	unstreamed := "payments whose stk.requested the stream lacks (kept as they are, the rest of their events applied on top)"
	if r.dropUnstreamed {
		unstreamed = "payments whose stk.requested the stream lacks (dropped)"
	}
	list(unstreamed, p.unstreamedN, p.unstreamed)
	for _, n := range p.schemaNotes {
		fmt.Fprintln(w, "note:", n)
	}
	fmt.Fprintf(w, "copied in %s", p.copyTook.Round(time.Millisecond))
	if swapped {
		fmt.Fprintf(w, "; the live table was held (reads and writes wait) for %s", p.lockedFor.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	switch {
	case !swapped:
		fmt.Fprintln(w, "dry run: nothing swapped")
	case old != "":
		fmt.Fprintf(w, "swapped: stk_pushes is the rebuilt table; the old one is %s.%s\n", r.live, old)
	default:
		fmt.Fprintln(w, "swapped: stk_pushes is the rebuilt table; the old one is dropped")
	}
}
