package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/stkgate/stkgate/events"
)

// Errors of Apply for events that no retry can apply. A consumer terminates
// such an event instead of redelivering it; every other error of Apply is
// worth retrying (the database was unreachable, a deadlock, a timeout).
var (
	// ErrInvalidEvent: the event cannot be a row (a tracking id that is no
	// UUID, an event of an unknown type).
	ErrInvalidEvent = errors.New("invalid event")
	// ErrConflict: a dispatched names a CheckoutRequestID that already
	// belongs to another payment. (A completion that does, or that names
	// another payment's receipt, is applied as an invalid outcome instead.)
	ErrConflict = errors.New("event conflicts with another payment")
)

// errReceiptTaken: a completion's receipt is another payment's (receiptIndex);
// Apply rewrites that completion, so it is never returned as permanent.
var errReceiptTaken = errors.New("its receipt is another payment's")

// IsPermanent reports whether err from Apply means that the events can
// never be applied, so retrying is pointless.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrInvalidEvent) || errors.Is(err, ErrConflict)
}

// checkoutIndex is the unique index on checkout_request_id (migration 1),
// receiptIndex the one on upper(transaction_code) (migration 6).
const (
	checkoutIndex = "stk_pushes_checkout_request_id_key"
	receiptIndex  = "stk_pushes_transaction_code_key"
)

// Apply writes evs into the read model in one transaction: all of them or,
// on error, none.
//
// It is idempotent and follows the state order requested < dispatched <
// completed, whatever order the events come in and however often:
//   - any event creates a missing row, since each carries the whole payment;
//   - a payment field is only ever filled in when empty, never changed;
//   - a dispatched fills in the Daraja ids a row lacks and moves a requested
//     row to stage dispatched;
//   - the first completion applied decides the outcome for good: a later
//     one changes nothing at all, and a requested or dispatched after it
//     only fills in what the row still lacks (Daraja's ids, say);
//   - updated_at moves only when the row really changed.
//
// Every event goes through Normalize first, and a completion that names a
// CheckoutRequestID another payment already has is applied as an invalid
// outcome without it: a completion is never refused, so no payment is left
// Pending because its completion could not be written. So is a completion
// whose M-Pesa receipt another payment already has (compared without
// regard to case): one receipt is one payment, and a second payment shown
// as paid by it would count one payment twice. Its description says so,
// with the receipt but not the other payment, which may be another
// client's. Each such rewrite is logged at error, with its tracking_id (and
// the other payment's), once the transaction committed.
//
// An error wrapping ErrInvalidEvent or ErrConflict (see IsPermanent) means
// some event of evs can never be applied (a tracking id that is no UUID, a
// dispatched naming another payment's CheckoutRequestID); apply them one
// by one to find it.
func (s *Store) Apply(ctx context.Context, evs []events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	norm := make([]events.Event, len(evs))
	var rewrites []rewrite
	for i, ev := range evs {
		n, why := Normalize(ev)
		if why != "" {
			rewrites = append(rewrites, rewrite{trackingID: n.Base().TrackingID, code: resultCode(n), why: why})
		}
		norm[i] = n
	}
	more, err := s.apply(ctx, norm, false, true)
	if errors.Is(err, ErrConflict) {
		// The completions folded into the first statement may have taken
		// an id before another payment's completion in that statement
		// gave it up (see rounds): the batch as rounds without the fold.
		more, err = s.apply(ctx, norm, false, false)
	}
	// Rare: look up who owns the batch's CheckoutRequestIDs and receipts
	// and rewrite the completions that name another payment's. A receipt
	// another transaction claimed between the look-up and the write (a
	// second projector) is looked up again.
	for try := 0; errors.Is(err, ErrConflict) && (try == 0 || errors.Is(err, errReceiptTaken)) && try < 3; try++ {
		more, err = s.apply(ctx, norm, true, false)
	}
	if errors.Is(err, errReceiptTaken) {
		// Still racing: not permanent, the batch is worth a retry.
		return fmt.Errorf("apply %d events: receipts claimed by concurrent writes: %v", len(evs), err)
	}
	if err != nil {
		return err
	}
	for _, r := range append(rewrites, more...) {
		attrs := []any{"tracking_id", r.trackingID, "response_code", r.code, "reason", r.why}
		if r.owner != "" {
			attrs = append(attrs, "owner_tracking_id", r.owner)
		}
		s.log.Error("completion applied as an invalid outcome", attrs...)
	}
	return nil
}

// rewrite is a completion Apply could not write as it was sent; owner is
// the payment that holds what it named, if that is why.
type rewrite struct {
	trackingID, code, why, owner string
}

// apply writes normalized events in one transaction; with resolve, it first
// rewrites the completions whose CheckoutRequestID is another payment's
// (resolveCheckouts) and returns them. absorb is rounds'.
//
// A batch that is one upsert and nothing else (the usual one: each
// payment's events folded into one row, no late result) is sent as that
// one statement, on its own: Postgres runs it in a transaction of its own,
// committed before it answers, so it is the same all-or-nothing write in
// one round trip where BEGIN, the statement and COMMIT take three.
func (s *Store) apply(ctx context.Context, evs []events.Event, resolve, absorb bool) ([]rewrite, error) {
	if !resolve && !s.alwaysTx {
		rows, lates, err := inputs(evs)
		if err != nil {
			return nil, err
		}
		if rs := rounds(rows, absorb); len(rs) == 1 && len(lates.ids) == 0 {
			if err := s.exec(ctx, nil, rs[0].args()); err != nil {
				return nil, fmt.Errorf("apply %d events: %w", len(evs), classify(err))
			}
			return nil, nil
		}
	}
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("apply: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var rewrites []rewrite
	if resolve {
		if evs, rewrites, err = resolveCheckouts(ctx, tx, evs); err != nil {
			return nil, err
		}
		var more []rewrite
		if evs, more, err = resolveReceipts(ctx, tx, evs); err != nil {
			return nil, err
		}
		rewrites = append(rewrites, more...)
	}
	rows, lates, err := inputs(evs)
	if err != nil {
		return nil, err
	}
	for _, round := range rounds(rows, absorb) {
		if err := s.exec(ctx, tx, round.args()); err != nil {
			return nil, fmt.Errorf("apply %d events: %w", len(evs), classify(err))
		}
	}
	if len(lates.ids) > 0 {
		if _, err := tx.ExecContext(ctx, setLateResult, lates.args()...); err != nil {
			return nil, fmt.Errorf("apply %d events: late results: %w", len(evs), classify(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("apply %d events: commit: %w", len(evs), classify(err))
	}
	return rewrites, nil
}

// exec runs upsert with args in tx, or on its own when tx is nil, through
// its prepared statement when there is one (Store.prepared). Only a
// statement on its own prepares it: preparing takes a connection of the
// pool, which a transaction, holding one already, could wait for forever
// when every connection is held by one.
func (s *Store) exec(ctx context.Context, tx *sqlx.Tx, args []any) error {
	stmt := s.upsert.Load()
	if tx == nil {
		stmt = s.prepared(ctx, &s.upsert, upsert)
	}
	var err error
	switch {
	case stmt != nil && tx != nil:
		_, err = tx.StmtContext(ctx, stmt).ExecContext(ctx, args...)
	case stmt != nil:
		_, err = stmt.ExecContext(ctx, args...)
	case tx != nil:
		_, err = tx.ExecContext(ctx, upsert, args...)
	default:
		_, err = s.db.ExecContext(ctx, upsert, args...)
	}
	return err
}

// inputs makes evs candidate rows, and keeps their late results apart.
func inputs(evs []events.Event) ([]input, lateResults, error) {
	rows := make([]input, 0, len(evs))
	var lates lateResults
	var at requestTimes
	for i, ev := range evs {
		r, err := toInput(ev, &at)
		if err != nil {
			return nil, lateResults{}, fmt.Errorf("apply event %d: %w", i, err)
		}
		if r.lateResult != "" {
			lates.add(r.trackingID, r.lateResult, r.lateSuccess)
			// Its payment creates the row if need be, as a requested would.
			r.lateResult, r.lateSuccess = "", false
		}
		rows = append(rows, r)
	}
	return rows, lates, nil
}

// classify marks the Postgres errors no retry can cure.
func classify(err error) error {
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) {
		return err
	}
	switch {
	case pqErr.Code == "23505" && pqErr.Constraint == checkoutIndex:
		return fmt.Errorf("%w: its CheckoutRequestID is another payment's: %w", ErrConflict, err)
	case pqErr.Code == "23505" && pqErr.Constraint == receiptIndex:
		return fmt.Errorf("%w: %w: %w", ErrConflict, errReceiptTaken, err)
	case pqErr.Code.Class() == "22", pqErr.Code.Class() == "23":
		// Data exceptions and constraint violations: the same values fail
		// the same way every time.
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	return err
}
