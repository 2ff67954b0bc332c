package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
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

// resolveCheckouts returns evs with every completion that names a
// CheckoutRequestID another payment holds (in the table, or by an earlier
// event of evs; a dispatched claims before any completion) rewritten as an
// invalid outcome without Daraja's ids. A dispatched that names another
// payment's is ErrConflict: it is no outcome, and is terminated alone.
func resolveCheckouts(ctx context.Context, tx *sqlx.Tx, evs []events.Event) ([]events.Event, []rewrite, error) {
	var ids []string
	for _, ev := range evs {
		if co := checkoutOf(ev); co != "" {
			ids = append(ids, co)
		}
	}
	owners := make(map[string]string, len(ids))
	var held []struct {
		Checkout string `db:"checkout_request_id"`
		Tracking string `db:"tracking_id"`
	}
	if err := tx.SelectContext(ctx, &held,
		`SELECT checkout_request_id, tracking_id::text AS tracking_id FROM stk_pushes WHERE checkout_request_id = ANY($1)`,
		pq.Array(ids)); err != nil {
		return nil, nil, fmt.Errorf("apply: look up CheckoutRequestIDs: %w", err)
	}
	for _, h := range held {
		owners[h.Checkout] = h.Tracking
	}
	// ownerOf claims co for id when nobody has it, and says who has it.
	ownerOf := func(co, id string) string {
		if o, ok := owners[co]; ok {
			return o
		}
		owners[co] = id
		return id
	}
	out := slices.Clone(evs)
	for _, ev := range evs {
		if d, ok := ev.(events.Dispatched); ok && d.CheckoutRequestID != "" {
			if o := ownerOf(d.CheckoutRequestID, Canonical(d.TrackingID)); o != Canonical(d.TrackingID) {
				return nil, nil, fmt.Errorf("%w: dispatched of %s names CheckoutRequestID %s of payment %s",
					ErrConflict, d.TrackingID, d.CheckoutRequestID, o)
			}
		}
	}
	var rewrites []rewrite
	for i, ev := range evs {
		c, ok := ev.(events.Completed)
		if !ok || c.CheckoutRequestID == "" {
			continue
		}
		if o := ownerOf(c.CheckoutRequestID, Canonical(c.TrackingID)); o != Canonical(c.TrackingID) {
			why := fmt.Sprintf("its CheckoutRequestID %s is payment %s's", c.CheckoutRequestID, o)
			c = invalidOutcome(c, why)
			c.MerchantRequestID, c.CheckoutRequestID = "", ""
			out[i] = c
			rewrites = append(rewrites, rewrite{trackingID: c.TrackingID, code: c.ResultCode, why: why})
		}
	}
	return out, rewrites, nil
}

// resolveReceipts returns evs with every completion whose receipt another
// payment holds (in the table, or by an earlier completion of evs) rewritten
// as an invalid outcome without it. Receipts are compared in upper case, as
// receiptIndex compares them.
func resolveReceipts(ctx context.Context, tx *sqlx.Tx, evs []events.Event) ([]events.Event, []rewrite, error) {
	var keys []string
	for _, ev := range evs {
		if c, ok := ev.(events.Completed); ok && c.Receipt != "" {
			keys = append(keys, strings.ToUpper(c.Receipt))
		}
	}
	if len(keys) == 0 {
		return evs, nil, nil
	}
	var held []struct {
		Receipt  string `db:"receipt"`
		Tracking string `db:"tracking_id"`
	}
	if err := tx.SelectContext(ctx, &held,
		`SELECT upper(transaction_code) AS receipt, tracking_id::text AS tracking_id FROM stk_pushes
		 WHERE upper(transaction_code) = ANY($1)`, pq.Array(keys)); err != nil {
		return nil, nil, fmt.Errorf("apply: look up receipts: %w", err)
	}
	owners := make(map[string]string, len(keys))
	for _, h := range held {
		owners[h.Receipt] = h.Tracking
	}
	out := slices.Clone(evs)
	var rewrites []rewrite
	for i, ev := range evs {
		c, ok := ev.(events.Completed)
		if !ok || c.Receipt == "" {
			continue
		}
		key, id := strings.ToUpper(c.Receipt), Canonical(c.TrackingID)
		o, claimed := owners[key]
		if !claimed {
			owners[key] = id
			continue
		}
		if o == id {
			continue
		}
		const why = "its receipt is already another payment's"
		out[i] = invalidOutcome(c, why)
		rewrites = append(rewrites, rewrite{trackingID: c.TrackingID, code: resultCode(out[i]), why: why, owner: o})
	}
	return out, rewrites, nil
}

// resultCode is a completion's result code, "" for another event.
func resultCode(ev events.Event) string {
	if c, ok := ev.(events.Completed); ok {
		return c.ResultCode
	}
	return ""
}

func checkoutOf(ev events.Event) string {
	switch e := ev.(type) {
	case events.Dispatched:
		return e.CheckoutRequestID
	case events.Completed:
		return e.CheckoutRequestID
	}
	return ""
}

// Canonical is a tracking id as the table writes it (uuid.UUID.String),
// or id itself when it is no UUID.
func Canonical(id string) string {
	if isCanonical(id) {
		return id
	}
	if u, err := uuid.Parse(id); err == nil {
		return u.String()
	}
	return id
}

// isCanonical reports whether id is a UUID written as uuid.UUID.String
// writes one (lower-case hex, dashes), which every service publishes:
// parsing it and writing it again would give id itself, in a new string.
func isCanonical(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// input is one event as a candidate row. Empty strings stand for NULL.
type input struct {
	trackingID          string // canonical UUID
	client              string
	phone               string
	amount              int64
	reference           string
	tag                 string
	requestedAt         string // timestampLayout, "" when unknown
	stage               int64
	status              int64
	responseCode        string
	responseDescription string
	transactionCode     string
	merchantRequestID   string
	checkoutRequestID   string
	transactionDate     string
	source              string
	lateResult          string // JSON of a LateResult; only from stk.late_result
	lateSuccess         bool   // lateResult is a success
	// folded: a completion with its payment's earlier events of the batch
	// folded in (rounds): applied as they would be, in turn, before it.
	folded bool
}

// timestampLayout writes a time as Postgres reads it, cut to the
// microseconds Postgres keeps, so what is stored is what was sent.
const timestampLayout = "2006-01-02T15:04:05.999999Z07:00"

// requestTimes writes request times as timestampLayout, the last one
// kept: a payment's events, which come one after the other, carry the same.
type requestTimes struct {
	t    time.Time
	text string
}

func (r *requestTimes) format(t time.Time) string {
	if r.text == "" || !t.Equal(r.t) {
		r.t, r.text = t, t.UTC().Format(timestampLayout)
	}
	return r.text
}

// toInput makes ev a candidate row; at writes its request time.
func toInput(ev events.Event, at *requestTimes) (input, error) {
	if ev == nil {
		return input{}, fmt.Errorf("%w: nil event", ErrInvalidEvent)
	}
	p := ev.Base()
	id := p.TrackingID
	if !isCanonical(id) {
		u, err := uuid.Parse(id)
		if err != nil {
			return input{}, fmt.Errorf("%w: %s tracking id %q is not a UUID", ErrInvalidEvent, ev.Type(), p.TrackingID)
		}
		id = u.String()
	}
	in := input{
		trackingID: id,
		client:     p.Client,
		phone:      p.Phone,
		amount:     p.Amount,
		reference:  p.Reference,
		tag:        p.Tag,
	}
	if !p.RequestedAt.IsZero() {
		in.requestedAt = at.format(p.RequestedAt)
	}
	switch e := ev.(type) {
	case events.Requested, *events.Requested:
		in.stage = StageRequested
	case events.Dispatched:
		in.stage = StageDispatched
		in.merchantRequestID, in.checkoutRequestID = e.MerchantRequestID, e.CheckoutRequestID
	case *events.Dispatched:
		in.stage = StageDispatched
		in.merchantRequestID, in.checkoutRequestID = e.MerchantRequestID, e.CheckoutRequestID
	case events.Completed:
		in.completed(e)
	case *events.Completed:
		in.completed(*e)
	case events.LateResult:
		if err := in.late(e); err != nil {
			return input{}, err
		}
	case *events.LateResult:
		if err := in.late(*e); err != nil {
			return input{}, err
		}
	default:
		return input{}, fmt.Errorf("%w: unknown event type %T", ErrInvalidEvent, ev)
	}
	if in.stage == StageCompleted && in.responseCode == "" {
		// Normalize gives every completion a code; only a caller that
		// skipped it gets here.
		return input{}, fmt.Errorf("%w: completion of %s without a result code", ErrInvalidEvent, in.trackingID)
	}
	return in, nil
}

func (in *input) completed(c events.Completed) {
	in.stage = StageCompleted
	status, _ := events.Outcome(c.ResultCode)
	in.status = int64(status)
	in.responseCode = c.ResultCode
	in.responseDescription = c.ResultDesc
	in.transactionCode = c.Receipt
	in.transactionDate = c.TransactionDate
	in.source = c.Source
	in.merchantRequestID, in.checkoutRequestID = c.MerchantRequestID, c.CheckoutRequestID
}

// late makes in a late result: its payment at stage requested (it may come
// before the payment's completion, or alone) and the result to keep.
func (in *input) late(l events.LateResult) error {
	in.stage = StageRequested
	b, err := json.Marshal(LateResultOf(l))
	if err != nil {
		return fmt.Errorf("%w: late result of %s: %v", ErrInvalidEvent, in.trackingID, err)
	}
	in.lateResult = string(b)
	in.lateSuccess = l.ResultCode == "0"
	return nil
}

// lateResults are the late results of a batch, one per tracking id: the
// first one, unless a success follows a failure (events.LateReplaces), as
// setLateResult decides between the batch and the row.
type lateResults struct {
	ids, results []string
	successes    []bool
	index        map[string]int
}

func (l *lateResults) add(id, result string, success bool) {
	if l.index == nil {
		l.index = map[string]int{}
	}
	if i, ok := l.index[id]; ok {
		if success && !l.successes[i] {
			l.results[i], l.successes[i] = result, true
		}
		return
	}
	l.index[id] = len(l.ids)
	l.ids = append(l.ids, id)
	l.results = append(l.results, result)
	l.successes = append(l.successes, success)
}

func (l *lateResults) args() []any {
	return []any{pq.Array(l.ids), pq.Array(l.results)}
}

// setLateResult keeps a late result on its row, which the upsert before it
// made sure exists, unless the row has one already, but for a late failure,
// which a late success replaces: a success pays someone and a failure
// nobody, and a failure anyone holding the CallBackURL can send first must
// not hide the customer's payment (events.LateReplaces). Nothing replaces a
// success, so applying late results again, in any order, changes nothing
// more. It changes no outcome
// field, whatever the row's stage: a late result applied before its
// payment's completion (a redelivery, another projector) is kept, and the
// completion, when it comes, decides the outcome as ever. Rows are locked
// in tracking id order, as by the upsert.
const setLateResult = `
UPDATE stk_pushes AS t SET late_result = i.late_result::jsonb, updated_at = now()
FROM (SELECT * FROM unnest($1::uuid[], $2::text[]) AS u(tracking_id, late_result) ORDER BY tracking_id) AS i
WHERE t.tracking_id = i.tracking_id
  AND (t.late_result IS NULL
       OR (t.late_result->>'response_code' IS DISTINCT FROM '0' AND i.late_result::jsonb->>'response_code' = '0'))
`

// batch is a set of inputs with at most one per tracking id: one INSERT …
// ON CONFLICT DO UPDATE can touch a row only once.
type batch []input

// rounds splits rows into batches to apply one after the other: for each
// tracking id its events in state order (arrival order within a stage), the
// first in the first batch, the second in the second, and so on. A
// tracking id's events before any completion (requested, dispatched, late
// results' payments) are first folded into one input (fold): the upsert
// merges them field by field, filling what is empty, the stage the
// highest, Daraja's ids the first seen, so one upsert of the fold leaves
// the row as the upserts of each in turn would, at the cost of one row
// version instead of several. The first completion (in arrival order) is
// folded in too when that changes nothing (absorb): when it brings no
// payment field the fold lacks and names the same Daraja ids. The folded
// input then fills in the row like the fold, whether or not the completion
// decides (upsert's $17), and decides as the completion would. Other
// completions are never folded: the first one applied decides. The merge
// does not depend on the order; state order only spares the updates a late
// requested would cost. Exact repeats are dropped. Every batch is sorted by
// tracking id so that concurrent transactions lock rows in the same order
// and cannot deadlock; a later batch only touches rows an earlier one
// already locked.
//
// absorb false folds no completion (the rounds as before the fold): Apply's
// retry after a conflict uses it, since a folded completion takes its
// CheckoutRequestID in the first statement, before another payment's
// completion in the same statement may have given it up.
func rounds(rows []input, absorb bool) []batch {
	rows = byStage(rows)
	// One map, by tracking id, where a map keyed by the whole input found
	// the exact repeats: hashing every field of every input was up to a
	// tenth of the projector's CPU. An input can only repeat one of its own tracking
	// id, found down the chain of those kept before it (prev).
	type idState struct {
		depth   int // its inputs in batches so far
		firstAt int // where in out[0] its first input is
		last    int // the last of its inputs kept, in rows
	}
	ids := make(map[string]*idState, len(rows))
	states := make([]idState, 0, len(rows))
	prev := make([]int, len(rows))
	var out []batch
	for i, r := range rows {
		st := ids[r.trackingID]
		if st == nil {
			states = append(states, idState{last: -1})
			st = &states[len(states)-1]
			ids[r.trackingID] = st
		}
		repeat := false
		for j := st.last; j >= 0; j = prev[j] {
			if rows[j] == r {
				repeat = true
				break
			}
		}
		if repeat {
			continue
		}
		prev[i], st.last = st.last, i
		k := st.depth
		if k > 0 && r.stage < StageCompleted {
			// Its earlier events, all before completion too (state
			// order), are folded into its input in the first batch.
			out[0][st.firstAt].fold(r)
			continue
		}
		// Only its first completion (k == 1 after its fold) may be
		// folded: the one that comes first decides.
		if absorb && k == 1 && out[0][st.firstAt].absorb(r) {
			continue
		}
		if k == 0 {
			if len(out) == 0 {
				// Room for every payment: most batches are this one.
				out = append(out, make(batch, 0, len(rows)))
			}
			st.firstAt = len(out[0])
		}
		st.depth = k + 1
		if k == len(out) {
			out = append(out, nil)
		}
		out[k] = append(out[k], r)
	}
	for _, b := range out {
		// A batch holds a tracking id once: no two compare equal.
		slices.SortFunc(b, func(x, y input) int { return strings.Compare(x.trackingID, y.trackingID) })
	}
	return out
}

// byStage returns rows in state order, arrival order within a stage: a
// stable sort on the three stages in one pass, where a stable comparison
// sort moves these large structs O(n log² n) times.
func byStage(rows []input) []input {
	var count [StageCompleted + 2]int // toInput gives stages 0 to 2 only
	for _, r := range rows {
		count[min(max(r.stage, 0), StageCompleted)+1]++
	}
	for i := 1; i < len(count); i++ {
		count[i] += count[i-1]
	}
	out := make([]input, len(rows))
	for _, r := range rows {
		k := min(max(r.stage, 0), StageCompleted)
		out[count[k]] = r
		count[k]++
	}
	return out
}

// fold merges r, an event of the same tracking id before completion that
// comes after in, into in as upsert merges a row with it: a payment field
// and each of Daraja's ids kept if set, else taken from r; the stage the
// higher. The request time stays in's: only the insert reads it.
func (in *input) fold(r input) {
	first := func(a *string, b string) {
		if *a == "" {
			*a = b
		}
	}
	first(&in.client, r.client)
	first(&in.phone, r.phone)
	first(&in.reference, r.reference)
	first(&in.tag, r.tag)
	first(&in.merchantRequestID, r.merchantRequestID)
	first(&in.checkoutRequestID, r.checkoutRequestID)
	if in.amount == 0 {
		in.amount = r.amount
	}
	in.stage = max(in.stage, r.stage)
}

// absorb folds c, a completion of the same tracking id that comes after
// in, into in when in is a fold of events before completion and the result
// is the same as applying in and then c: c brings no payment field in
// lacks (the fold's fills stand whatever c's fate, c's would only if c
// decides) and names the same Daraja ids as in (which the row keeps,
// COALESCE(t, in), when c does not decide, and takes, COALESCE(c, t),
// when it does). in then carries c's outcome, and folded marks it for the
// upsert. It reports whether c was folded.
func (in *input) absorb(c input) bool {
	if in.stage >= StageCompleted || c.stage != StageCompleted ||
		in.merchantRequestID != c.merchantRequestID || in.checkoutRequestID != c.checkoutRequestID {
		return false
	}
	lacks := func(a, b string) bool { return a == "" && b != "" }
	if lacks(in.client, c.client) || lacks(in.phone, c.phone) || lacks(in.reference, c.reference) ||
		lacks(in.tag, c.tag) || (in.amount == 0 && c.amount != 0) {
		return false
	}
	in.stage, in.status = c.stage, c.status
	in.responseCode, in.responseDescription = c.responseCode, c.responseDescription
	in.transactionCode, in.transactionDate, in.source = c.transactionCode, c.transactionDate, c.source
	in.folded = true
	return true
}

func (b batch) args() []any {
	var (
		ids, clients, phones, refs, tags, requested                  []string
		codes, descs, receipts, merchants, checkouts, dates, sources []string
		amounts, stages, statuses                                    []int64
		folded                                                       = []string{}
	)
	for _, r := range b {
		ids = append(ids, r.trackingID)
		clients = append(clients, r.client)
		phones = append(phones, r.phone)
		amounts = append(amounts, r.amount)
		refs = append(refs, r.reference)
		tags = append(tags, r.tag)
		statuses = append(statuses, r.status)
		codes = append(codes, r.responseCode)
		descs = append(descs, r.responseDescription)
		receipts = append(receipts, r.transactionCode)
		merchants = append(merchants, r.merchantRequestID)
		checkouts = append(checkouts, r.checkoutRequestID)
		dates = append(dates, r.transactionDate)
		stages = append(stages, r.stage)
		sources = append(sources, r.source)
		requested = append(requested, r.requestedAt)
		if r.folded {
			folded = append(folded, r.trackingID)
		}
	}
	return []any{
		pq.Array(ids), pq.Array(clients), pq.Array(phones), pq.Array(amounts), pq.Array(refs), pq.Array(tags),
		pq.Array(statuses), pq.Array(codes), pq.Array(descs), pq.Array(receipts),
		pq.Array(merchants), pq.Array(checkouts), pq.Array(dates), pq.Array(stages), pq.Array(sources),
		pq.Array(requested), pq.Array(folded),
	}
}

// upsert applies a batch. "win" below is the condition under which the
// incoming event is the first completion of the row:
// EXCLUDED.stage = 2 AND t.stage < 2. The WHERE clause holds exactly when
// the SET changes something, so a repeated or outrun event leaves the row,
// updated_at included, untouched; a completion that is not the first
// changes nothing, unless it carries its payment's earlier events (input
// folded, its tracking id in $17): then those fill in what the row lacks,
// as they would have alone.
const upsert = `
INSERT INTO stk_pushes AS t (
	tracking_id, client, phone_number, amount, reference, tag,
	status, response_code, response_description, transaction_code,
	merchant_request_id, checkout_request_id, transaction_date, stage, source,
	created_at, updated_at)
SELECT i.tracking_id, i.client, i.phone_number, i.amount, i.reference, NULLIF(i.tag, ''),
	i.status, NULLIF(i.response_code, ''), NULLIF(i.response_description, ''), NULLIF(i.transaction_code, ''),
	NULLIF(i.merchant_request_id, ''), NULLIF(i.checkout_request_id, ''), NULLIF(i.transaction_date, ''), i.stage, NULLIF(i.source, ''),
	COALESCE(NULLIF(i.requested_at, '')::timestamptz, now()), now()
FROM unnest(
	$1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
	$7::smallint[], $8::text[], $9::text[], $10::text[],
	$11::text[], $12::text[], $13::text[], $14::smallint[], $15::text[],
	$16::text[]
) AS i(tracking_id, client, phone_number, amount, reference, tag,
	status, response_code, response_description, transaction_code,
	merchant_request_id, checkout_request_id, transaction_date, stage, source,
	requested_at)
ORDER BY i.tracking_id
ON CONFLICT (tracking_id) DO UPDATE SET
	client       = CASE WHEN t.client = '' THEN EXCLUDED.client ELSE t.client END,
	phone_number = CASE WHEN t.phone_number = '' THEN EXCLUDED.phone_number ELSE t.phone_number END,
	amount       = CASE WHEN t.amount = 0 THEN EXCLUDED.amount ELSE t.amount END,
	reference    = CASE WHEN t.reference = '' THEN EXCLUDED.reference ELSE t.reference END,
	tag          = COALESCE(t.tag, EXCLUDED.tag),
	stage        = GREATEST(t.stage, EXCLUDED.stage),
	status               = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.status ELSE t.status END,
	response_code        = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.response_code ELSE t.response_code END,
	response_description = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.response_description ELSE t.response_description END,
	transaction_code     = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.transaction_code ELSE t.transaction_code END,
	transaction_date     = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.transaction_date ELSE t.transaction_date END,
	source               = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.source ELSE t.source END,
	-- Daraja's ids: the deciding completion's when it has them, else the
	-- first ones seen.
	merchant_request_id = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2
		THEN COALESCE(EXCLUDED.merchant_request_id, t.merchant_request_id)
		ELSE COALESCE(t.merchant_request_id, EXCLUDED.merchant_request_id) END,
	checkout_request_id = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2
		THEN COALESCE(EXCLUDED.checkout_request_id, t.checkout_request_id)
		ELSE COALESCE(t.checkout_request_id, EXCLUDED.checkout_request_id) END,
	updated_at = now()
WHERE (NOT (EXCLUDED.stage = 2 AND t.stage = 2) OR EXCLUDED.tracking_id = ANY($17::uuid[])) AND (
	EXCLUDED.stage > t.stage
	OR (t.client = '' AND EXCLUDED.client <> '')
	OR (t.phone_number = '' AND EXCLUDED.phone_number <> '')
	OR (t.amount = 0 AND EXCLUDED.amount <> 0)
	OR (t.reference = '' AND EXCLUDED.reference <> '')
	OR (t.tag IS NULL AND EXCLUDED.tag IS NOT NULL)
	OR (t.merchant_request_id IS NULL AND EXCLUDED.merchant_request_id IS NOT NULL)
	OR (t.checkout_request_id IS NULL AND EXCLUDED.checkout_request_id IS NOT NULL))
`

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
