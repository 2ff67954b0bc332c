package admin

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/projector"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/redact"
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
	// third less time than the default 256.
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

func (r *rebuilder) run(ctx context.Context) (err error) {
	// The advisory lock is a session's: one connection for the whole run.
	conn, err := r.db.Connx(ctx)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	defer conn.Close()
	var got bool
	if err := conn.GetContext(ctx, &got, `SELECT pg_try_advisory_lock($1)`, rebuildLockID); err != nil {
		return fmt.Errorf("rebuild: lock: %w", err)
	}
	if !got {
		return errors.New("rebuild: another rebuild-read-model is running on this database")
	}
	defer func() {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, rebuildLockID)
	}()

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
	if err := r.carryOver(ctx, conn); err != nil {
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

// unstreamedTable lists, in the rebuild schema, the tracking ids of the
// unstreamed payments: the live rows at the rebuild's start whose
// stk.requested the stream does not hold (aged out after
// events.RequestRetention, or never there: a row written by hand), and
// the live rows the swap finds that no event made.
const unstreamedTable = rebuildSchema + ".rebuild_unstreamed"

// seedUnstreamed puts the live rows of the unstreamed payments into the
// rebuilt table before any event: as they are, id and updated_at too.
//
// A payment that lost only part of its history to the stream's retention
// (its request, say, but not a late result) would otherwise be rebuilt
// from what is left, a final payment back at Pending; with its live row
// first, the events left are applied on top by the projector's rules,
// which never undo an outcome. And its receipt and CheckoutRequestID are
// claimed from the start, so that a later completion naming them is
// rewritten during the copy as the projector rewrote it, instead of
// failing the swap on the unique index (or, with --drop-unstreamed,
// making the later payment paid with the old one's receipt).
//
// The live table's ids are read before the stream's subjects: a payment
// the projector writes meanwhile has its stk.requested stored already.
func (r *rebuilder) seedUnstreamed(ctx context.Context, conn *sqlx.Conn, stream jetstream.Stream) error {
	if _, err := conn.ExecContext(ctx, `CREATE TABLE `+unstreamedTable+` (tracking_id uuid PRIMARY KEY)`); err != nil {
		return fmt.Errorf("rebuild: unstreamed payments: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO `+unstreamedTable+` SELECT tracking_id FROM `+r.liveTable()); err != nil {
		return fmt.Errorf("rebuild: unstreamed payments: %w", err)
	}
	// The subjects alone: JetStream counts them without sending a message.
	prefix := events.TypeRequested + "."
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return fmt.Errorf("rebuild: stream %s: %w", events.StreamName, err)
	}
	streamed := make([]string, 0, 10000)
	flush := func() error {
		if len(streamed) == 0 {
			return nil
		}
		_, err := conn.ExecContext(ctx, `DELETE FROM `+unstreamedTable+` WHERE tracking_id = ANY($1::uuid[])`, pq.Array(streamed))
		streamed = streamed[:0]
		if err != nil {
			return fmt.Errorf("rebuild: unstreamed payments: %w", err)
		}
		return nil
	}
	for subj := range info.State.Subjects {
		// A subject that names no UUID made no row.
		id, err := uuid.Parse(strings.TrimPrefix(subj, prefix))
		if err != nil {
			continue
		}
		if streamed = append(streamed, id.String()); len(streamed) == cap(streamed) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	cols := r.eventCols("l") + ", l.id, l.updated_at"
	if _, err := conn.ExecContext(ctx, `INSERT INTO `+rebuildSchema+`.stk_pushes (`+strings.ReplaceAll(cols, "l.", "")+`)
		SELECT `+cols+` FROM `+r.liveTable()+` l JOIN `+unstreamedTable+` u ON u.tracking_id = l.tracking_id`); err != nil {
		return fmt.Errorf("rebuild: put in the unstreamed payments: %w", err)
	}
	return nil
}

// openRebuildDB opens a pool whose every connection sees only the rebuild
// schema: an unqualified stk_pushes there is never the live one.
func (r *rebuilder) openRebuildDB(ctx context.Context) error {
	cfg, err := pq.NewConfig(r.dbURL)
	if err != nil {
		// The error may quote the URL, password and all.
		return fmt.Errorf("rebuild: DATABASE_URL: %s", redact.URLs(err.Error()))
	}
	if cfg.Runtime == nil {
		cfg.Runtime = map[string]string{}
	}
	cfg.Runtime["search_path"] = rebuildSchema
	connector, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return fmt.Errorf("rebuild: DATABASE_URL: %s", redact.URLs(err.Error()))
	}
	r.rdb = sqlx.NewDb(sql.OpenDB(connector), "postgres")
	r.rdb.SetMaxOpenConns(4)
	var path string
	if err := r.rdb.GetContext(ctx, &path, `SELECT current_setting('search_path')`); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	if path != rebuildSchema {
		// An options=-c search_path=… in DATABASE_URL won: refuse rather
		// than write where the live table may be.
		return fmt.Errorf("rebuild: the rebuild's connections have search_path %q, want %q (does DATABASE_URL set one?)", path, rebuildSchema)
	}
	r.rstore = store.New(r.rdb).WithLogger(slog.New(slog.DiscardHandler))
	return nil
}

// copyStream applies the STK stream's messages from sequence from to to
// (both included) to the rebuilt table.
func (r *rebuilder) copyStream(ctx context.Context, from, to uint64) error {
	if to < from || to == 0 {
		return nil
	}
	cons, err := r.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectAll},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
	}
	var batch []events.Event
	flush := func() error {
		err := r.applyBatch(ctx, batch)
		batch = batch[:0]
		return err
	}
	var lastSeen uint64
	for idle := 0; ; {
		msgs, err := cons.Fetch(rebuildBatch, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
		}
		n := 0
		done := false
		for m := range msgs.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
			}
			lastSeen = md.Sequence.Stream
			if md.Sequence.Stream > to {
				done = true
				break
			}
			r.rep.events++
			ev, err := projector.Decode(m.Subject(), m.Data())
			if err != nil {
				// The projector terminated it too.
				r.rep.malformed++
			} else {
				batch = append(batch, ev)
			}
			if md.Sequence.Stream == to {
				// The rest of the fetch would only be waited for.
				done = true
				break
			}
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
		}
		if err := flush(); err != nil {
			return err
		}
		if done {
			return nil
		}
		if n > 0 {
			idle = 0
			continue
		}
		// Nothing came: the messages up to to may have aged out meanwhile.
		info, err := r.js.Stream(ctx, events.StreamName)
		if err != nil {
			return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
		}
		st, err := info.Info(ctx)
		if err != nil {
			return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
		}
		if st.State.FirstSeq > to || st.State.Msgs == 0 || lastSeen >= min(to, st.State.LastSeq) {
			return nil
		}
		if idle++; idle > 5 {
			return fmt.Errorf("rebuild: read %s: no message came for 10s before sequence %d", events.StreamName, to)
		}
	}
}

// applyBatch applies evs as the projector applies a batch: together, or,
// when one of them can never be applied (store.IsPermanent), one by one,
// leaving out those the projector terminates.
func (r *rebuilder) applyBatch(ctx context.Context, evs []events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	err := r.rstore.Apply(ctx, evs)
	if err == nil {
		r.rep.applied += len(evs)
		return nil
	}
	if !store.IsPermanent(err) {
		return fmt.Errorf("rebuild: %w", err)
	}
	for _, ev := range evs {
		err := r.rstore.Apply(ctx, []events.Event{ev})
		switch {
		case err == nil:
			r.rep.applied++
		case store.IsPermanent(err):
			r.rep.rejected++
		default:
			return fmt.Errorf("rebuild: %w", err)
		}
	}
	return nil
}

// eventCols is "t.a, t.b, …" for the rebuilt table's columns but id and
// updated_at: what the events decide.
func (r *rebuilder) eventCols(alias string) string {
	q := make([]string, len(r.cols))
	for i, c := range r.cols {
		q[i] = alias + "." + pq.QuoteIdentifier(c)
	}
	return strings.Join(q, ", ")
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

// errTableBusy: the swap did not get the live table within swapLockTimeout.
var errTableBusy = errors.New("the live table is busy")

// swap moves the rebuilt table in, trying again while the live table is
// busy. What a try applied to the rebuilt table (through other
// connections) stays: the next one has less to do.
func (r *rebuilder) swap(ctx context.Context, conn *sqlx.Conn) error {
	for try := 1; ; try++ {
		err := r.swapOnce(ctx, conn)
		if !errors.Is(err, errTableBusy) {
			return err
		}
		if try >= swapAttempts {
			return fmt.Errorf("rebuild: could not lock the live table stk_pushes in %d tries of %s each (a long or idle transaction holds it: see pg_stat_activity); nothing changed: %w",
				try, swapLockTimeout, err)
		}
		fmt.Fprintf(r.stderr, "the live table is busy; trying again (%d of %d)…\n", try+1, swapAttempts)
		select {
		case <-ctx.Done():
			return fmt.Errorf("rebuild: swap: %w", ctx.Err())
		case <-time.After(min(time.Duration(try)*100*time.Millisecond, time.Second)):
		}
	}
}

// swapOnce moves the rebuilt table in, in one transaction that holds the
// live table from the start in ACCESS EXCLUSIVE mode, the one the rename
// needs: taking a weaker lock first and this one later would deadlock with
// the projector, which reads the table before it writes when a batch names
// a receipt or CheckoutRequestID (store.Apply): it holds ACCESS SHARE,
// waits for its write behind the weaker lock, and the rename waits for it.
// The api's reads wait too, as long as the swap holds the table (the time
// printed).
func (r *rebuilder) swapOnce(ctx context.Context, conn *sqlx.Conn) error {
	tx, err := conn.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("rebuild: swap: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, swapLockTimeout.Milliseconds())); err != nil {
		return fmt.Errorf("rebuild: swap: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `LOCK TABLE `+r.liveTable()+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && (pqErr.Code == "55P03" || pqErr.Code == "40P01") {
			return fmt.Errorf("%w: %w", errTableBusy, err)
		}
		return fmt.Errorf("rebuild: lock the live table: %w", err)
	}
	lockedAt := time.Now()
	if err := r.checkUnchanged(ctx, tx); err != nil {
		return err
	}
	if rebuildHook != nil {
		rebuildHook("locked")
	}
	// Every event the projector committed to the live table is in the
	// stream up to here.
	stream, err := r.js.Stream(ctx, events.StreamName)
	if err != nil {
		return fmt.Errorf("rebuild: swap: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("rebuild: swap: %w", err)
	}
	if err := r.copyStream(ctx, r.rep.lastSeq+1, info.State.LastSeq); err != nil {
		return err
	}
	r.rep.lastSeq = max(r.rep.lastSeq, info.State.LastSeq)
	if rebuildHook != nil {
		rebuildHook("caught-up")
	}
	if err := r.carryOver(ctx, tx); err != nil {
		return err
	}
	// A live row no event made and not put in first (written by hand
	// during the rebuild) is unstreamed too.
	cols := r.eventCols("l") + ", l.id, l.updated_at"
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+unstreamedTable+` SELECT l.tracking_id FROM `+r.liveTable()+` l
		WHERE NOT EXISTS (SELECT 1 FROM `+rebuildSchema+`.stk_pushes r WHERE r.tracking_id = l.tracking_id)`); err != nil {
		return fmt.Errorf("rebuild: keep the rows the stream lacks: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+rebuildSchema+`.stk_pushes (`+strings.ReplaceAll(cols, "l.", "")+`)
		SELECT `+cols+` FROM `+r.liveTable()+` l
		WHERE NOT EXISTS (SELECT 1 FROM `+rebuildSchema+`.stk_pushes r WHERE r.tracking_id = l.tracking_id)`); err != nil {
		return fmt.Errorf("rebuild: keep the rows the stream lacks: %w", err)
	}
	if err := r.compare(ctx, tx); err != nil {
		return err
	}
	// --drop-unstreamed drops them only now: they held their receipts and
	// CheckoutRequestIDs during the copy, so no later payment took them.
	if r.dropUnstreamed {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+rebuildSchema+`.stk_pushes r USING `+unstreamedTable+` u
			WHERE u.tracking_id = r.tracking_id`); err != nil {
			return fmt.Errorf("rebuild: drop the unstreamed payments: %w", err)
		}
		r.rep.rebuiltRows -= r.rep.unstreamedN
	}
	if err := r.renumber(ctx, tx); err != nil {
		return err
	}
	if err := r.copyGrants(ctx, tx); err != nil {
		return err
	}
	old, err := r.renameLive(ctx, tx)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `ALTER TABLE `+rebuildSchema+`.stk_pushes SET SCHEMA `+pq.QuoteIdentifier(r.live)); err != nil {
		return fmt.Errorf("rebuild: move the rebuilt table in: %w", err)
	}
	if !r.keepOld {
		if _, err := tx.ExecContext(ctx, `DROP TABLE `+pq.QuoteIdentifier(r.live)+`.`+pq.QuoteIdentifier(old)); err != nil {
			return fmt.Errorf("rebuild: drop the old table: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("rebuild: swap: commit: %w", err)
	}
	r.rep.lockedFor = time.Since(lockedAt)
	if !r.keepOld {
		old = ""
	}
	r.print(true, old)
	return nil
}

// renumber gives the rebuilt rows no live row had (restored ones) ids after
// every live one, in the order their first event came, and sets the
// sequence to count on from there as the live one did.
func (r *rebuilder) renumber(ctx context.Context, tx *sqlx.Tx) error {
	var next int64
	if err := tx.GetContext(ctx, &next, `SELECT GREATEST(
			(SELECT last_value FROM `+r.liveSeq+`),
			(SELECT COALESCE(max(id), 0) FROM `+r.liveTable()+`),
			(SELECT COALESCE(max(id), 0) FROM `+rebuildSchema+`.stk_pushes)) + 1`); err != nil {
		return fmt.Errorf("rebuild: ids: %w", err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`ALTER SEQUENCE %s.stk_pushes_id_seq
		INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 RESTART WITH %d`, rebuildSchema, next)); err != nil {
		return fmt.Errorf("rebuild: ids: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+rebuildSchema+`.stk_pushes r SET id = n.id
		FROM (SELECT tracking_id, nextval('`+rebuildSchema+`.stk_pushes_id_seq') AS id
		        FROM (SELECT tracking_id FROM `+rebuildSchema+`.stk_pushes WHERE id < 0 ORDER BY id DESC) o) n
		WHERE r.tracking_id = n.tracking_id`); err != nil {
		return fmt.Errorf("rebuild: ids: %w", err)
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
