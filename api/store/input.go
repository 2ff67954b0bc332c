package store

// An event as a candidate row of the payments table.

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
)

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
