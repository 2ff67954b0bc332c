package projector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/stkgate/stkgate/events"
)

// Decode reads the event of a message of the STK stream (its subject and
// body) and checks it was published where its kind and tracking id say it
// should be. An error wraps events.ErrMalformed: the projector terminates
// such a message. stkgate-admin's rebuild-read-model reads the stream
// through it too, so that it takes and skips exactly what the projector
// does.
//
// It takes and skips exactly what events.Decode does, with the same
// events: decoding was half the projector's CPU. A body as the services
// write it is read without encoding/json (events.DecodeScan, which
// DecodeAs shares); what that cannot vouch for, in one pass of
// encoding/json (decodeOnePass) where events.Decode makes two (the
// envelope, then its data again); what neither can, by events.Decode. A
// scanned event on a subject not its own is left to them too, for the
// error to say so.
func Decode(subject string, body []byte) (events.Event, error) {
	if env, ok := events.DecodeScan(body); ok && isSubject(subject, env.Type, env.Subject) {
		return env.Data, nil
	}
	ev, ok := decodeOnePass(body)
	if !ok {
		var err error
		if _, ev, err = events.Decode(body); err != nil {
			return nil, err
		}
	}
	if want := events.Subject(ev.Type(), ev.Base().TrackingID); subject != want {
		return nil, fmt.Errorf("%w: a %s on subject %s, want %s", events.ErrMalformed, ev.Type(), subject, want)
	}
	return ev, nil
}

// isSubject is subject == events.Subject(typ, trackingID), without
// building it: the scan's path allocates nothing else.
func isSubject(subject, typ, trackingID string) bool {
	return len(subject) == len(typ)+1+len(trackingID) && subject[:len(typ)] == typ &&
		subject[len(typ)] == '.' && subject[len(typ)+1:] == trackingID
}

// anyEvent has every field of events.Requested, Dispatched, Completed and
// LateResult, each under its JSON name and of its type: no two differ in
// either.
type anyEvent struct {
	events.Payment
	CallbackURL         string    `json:"callback_url"`
	MerchantRequestID   string    `json:"merchant_request_id"`
	CheckoutRequestID   string    `json:"checkout_request_id"`
	ResponseDescription string    `json:"response_description"`
	CustomerMessage     string    `json:"customer_message"`
	FollowsCode         string    `json:"follows_result_code"`
	ResultCode          string    `json:"result_code"`
	ResultDesc          string    `json:"result_desc"`
	Receipt             string    `json:"receipt"`
	TransactionDate     string    `json:"transaction_date"`
	Source              string    `json:"source"`
	CompletedAt         time.Time `json:"completed_at"`
	LearntAt            time.Time `json:"learnt_at"`
}

// decodeOnePass decodes body as events.Decode would, and reports whether
// it could vouch for the result: it cannot when body is not such an
// envelope with its data an object (events.Decode then says what is wrong
// with it), names its data more than once (events.Decode keeps the last
// data, one pass would merge them), or escapes a character (a key may be
// written with escapes). A field of another kind of event, of the wrong
// type, fails the one pass only: events.Decode ignores it.
func decodeOnePass(body []byte) (events.Event, bool) {
	if bytes.Contains(body, []byte(`\u`)) || events.DataKeys(body) != 1 {
		return nil, false
	}
	var env events.EnvelopeOf[*anyEvent]
	if err := json.Unmarshal(body, &env); err != nil || env.Data == nil || env.SpecVersion != events.SpecVersion {
		return nil, false
	}
	d := env.Data
	var ev events.Event
	switch env.Type {
	case events.TypeRequested:
		ev = events.Requested{Payment: d.Payment, CallbackURL: d.CallbackURL}
	case events.TypeDispatched:
		ev = events.Dispatched{Payment: d.Payment, MerchantRequestID: d.MerchantRequestID, CheckoutRequestID: d.CheckoutRequestID,
			ResponseDescription: d.ResponseDescription, CustomerMessage: d.CustomerMessage}
	case events.TypeCompleted:
		ev = events.Completed{Payment: d.Payment, ResultCode: d.ResultCode, ResultDesc: d.ResultDesc, Receipt: d.Receipt,
			TransactionDate: d.TransactionDate, Source: d.Source, MerchantRequestID: d.MerchantRequestID,
			CheckoutRequestID: d.CheckoutRequestID, CompletedAt: d.CompletedAt}
	case events.TypeLateResult:
		ev = events.LateResult{Payment: d.Payment, FollowsCode: d.FollowsCode, ResultCode: d.ResultCode, ResultDesc: d.ResultDesc,
			Receipt: d.Receipt, TransactionDate: d.TransactionDate, Source: d.Source, MerchantRequestID: d.MerchantRequestID,
			CheckoutRequestID: d.CheckoutRequestID, LearntAt: d.LearntAt}
	default:
		return nil, false
	}
	if id := d.TrackingID; id == "" || id != env.Subject {
		return nil, false
	}
	return ev, true
}
