package admin

// rebuild-read-model's swap: the rebuilt table moved in for the live one.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/stkgate/stkgate/events"
)

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
