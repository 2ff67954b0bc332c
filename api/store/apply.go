package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/stkgate/stkgate/events"
)

// Errors of Apply for events that no retry can apply. A consumer terminates
// such an event instead of redelivering it; every other error of Apply is
// worth retrying (the database was unreachable, a deadlock, a timeout).
var (
	// ErrInvalidEvent: the event cannot be a row (a tracking id that is no
	// UUID, a completion without a result code, text Postgres refuses).
	ErrInvalidEvent = errors.New("invalid event")
	// ErrConflict: the event names a CheckoutRequestID that already belongs
	// to another payment.
	ErrConflict = errors.New("event conflicts with another payment")
)

// IsPermanent reports whether err from Apply means that the events can
// never be applied, so retrying is pointless.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrInvalidEvent) || errors.Is(err, ErrConflict)
}

// checkoutIndex is the unique index on checkout_request_id (migration 1).
const checkoutIndex = "stk_pushes_checkout_request_id_key"

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
// An error wrapping ErrInvalidEvent or ErrConflict (see IsPermanent) means
// some event of evs can never be applied; apply them one by one to find it.
func (s *Store) Apply(ctx context.Context, evs []events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	rows := make([]input, 0, len(evs))
	for i, ev := range evs {
		r, err := toInput(ev)
		if err != nil {
			return fmt.Errorf("apply event %d: %w", i, err)
		}
		rows = append(rows, r)
	}

	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("apply: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, round := range rounds(rows) {
		if _, err := tx.ExecContext(ctx, upsert, round.args()...); err != nil {
			return fmt.Errorf("apply %d events: %w", len(evs), classify(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("apply %d events: commit: %w", len(evs), classify(err))
	}
	return nil
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
}

// timestampLayout writes a time as Postgres reads it, cut to the
// microseconds Postgres keeps, so what is stored is what was sent.
const timestampLayout = "2006-01-02T15:04:05.999999Z07:00"

func toInput(ev events.Event) (input, error) {
	if ev == nil {
		return input{}, fmt.Errorf("%w: nil event", ErrInvalidEvent)
	}
	p := ev.Base()
	id, err := uuid.Parse(p.TrackingID)
	if err != nil {
		return input{}, fmt.Errorf("%w: %s tracking id %q is not a UUID", ErrInvalidEvent, ev.Type(), p.TrackingID)
	}
	in := input{
		trackingID: id.String(),
		client:     p.Client,
		phone:      p.Phone,
		amount:     p.Amount,
		reference:  p.Reference,
		tag:        p.Tag,
	}
	if !p.RequestedAt.IsZero() {
		in.requestedAt = p.RequestedAt.UTC().Format(timestampLayout)
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
	default:
		return input{}, fmt.Errorf("%w: unknown event type %T", ErrInvalidEvent, ev)
	}
	if in.stage == StageCompleted && in.responseCode == "" {
		return input{}, fmt.Errorf("%w: completion of %s without a result code", ErrInvalidEvent, in.trackingID)
	}
	for _, s := range []string{in.client, in.phone, in.reference, in.tag, in.responseCode, in.responseDescription,
		in.transactionCode, in.merchantRequestID, in.checkoutRequestID, in.transactionDate, in.source} {
		if strings.IndexByte(s, 0) >= 0 {
			return input{}, fmt.Errorf("%w: %s of %s has a NUL byte", ErrInvalidEvent, ev.Type(), in.trackingID)
		}
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

// batch is a set of inputs with at most one per tracking id: one INSERT …
// ON CONFLICT DO UPDATE can touch a row only once.
type batch []input

// rounds splits rows into batches to apply one after the other: for each
// tracking id its events in state order (arrival order within a stage), the
// first in the first batch, the second in the second, and so on. The merge
// does not depend on the order; state order only spares the updates a late
// requested would cost. Exact repeats are dropped. Every batch is sorted by
// tracking id so that concurrent transactions lock rows in the same order
// and cannot deadlock; a later batch only touches rows an earlier one
// already locked.
func rounds(rows []input) []batch {
	slices.SortStableFunc(rows, func(a, b input) int { return int(a.stage - b.stage) })
	seen := make(map[input]bool, len(rows))
	depth := make(map[string]int, len(rows))
	var out []batch
	for _, r := range rows {
		if seen[r] {
			continue
		}
		seen[r] = true
		k := depth[r.trackingID]
		depth[r.trackingID] = k + 1
		if k == len(out) {
			out = append(out, nil)
		}
		out[k] = append(out[k], r)
	}
	for _, b := range out {
		slices.SortStableFunc(b, func(x, y input) int { return strings.Compare(x.trackingID, y.trackingID) })
	}
	return out
}

func (b batch) args() []any {
	var (
		ids, clients, phones, refs, tags, requested                  []string
		codes, descs, receipts, merchants, checkouts, dates, sources []string
		amounts, stages, statuses                                    []int64
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
	}
	return []any{
		pq.Array(ids), pq.Array(clients), pq.Array(phones), pq.Array(amounts), pq.Array(refs), pq.Array(tags),
		pq.Array(statuses), pq.Array(codes), pq.Array(descs), pq.Array(receipts),
		pq.Array(merchants), pq.Array(checkouts), pq.Array(dates), pq.Array(stages), pq.Array(sources),
		pq.Array(requested),
	}
}

// upsert applies a batch. "win" below is the condition under which the
// incoming event is the first completion of the row:
// EXCLUDED.stage = 2 AND t.stage < 2. The WHERE clause holds exactly when
// the SET changes something, so a repeated or outrun event leaves the row,
// updated_at included, untouched; a completion that is not the first
// changes nothing.
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
WHERE NOT (EXCLUDED.stage = 2 AND t.stage = 2) AND (
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
	case pqErr.Code.Class() == "22", pqErr.Code.Class() == "23":
		// Data exceptions and constraint violations: the same values fail
		// the same way every time.
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	return err
}
