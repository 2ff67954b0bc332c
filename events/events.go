// Package events is stkgate's wire contract: the subjects, the STK stream and
// its consumers, the CloudEvents envelope, the typed payloads and the status
// table. Every service encodes and decodes events through this package only.
package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Event types. A subject is the type followed by the tracking id
// (stk.completed.<id>), so the type is the subject's first two tokens.
const (
	TypeRequested  = "stk.requested"
	TypeDispatched = "stk.dispatched"
	TypeCompleted  = "stk.completed"
	// TypeLateResult follows a stk.completed that stkgate decided itself
	// (DecidedByStkgate: an Unknown outcome, a deadline passed) when
	// Daraja's own word arrives after it. It never moves the final outcome;
	// it is shown beside it (meta.late_result) and told to subscribers.
	TypeLateResult = "stk.late_result"
)

// SpecVersion is the CloudEvents version of every envelope.
const SpecVersion = "1.0"

// Sources of stk.completed: who decided the final outcome.
const (
	SourceCallback   = "callback"
	SourceDispatcher = "dispatcher"
	SourceQuery      = "query"
)

// TransactionDateLayout is how a Daraja TransactionDate (East Africa Time) is
// written in events and records: meta.transaction_date.
const TransactionDateLayout = "2006-01-02 15:04:05"

// ErrMalformed marks an event that cannot be decoded: a consumer terminates it
// rather than retrying.
var ErrMalformed = errors.New("malformed event")

// Payment is what a client asked for. Every event carries it whole, so any one
// of them is enough to build the read model's row and a downstream service
// needs no second lookup.
type Payment struct {
	TrackingID  string    `json:"tracking_id"`
	Client      string    `json:"client"`
	Phone       string    `json:"phone"`
	Amount      int64     `json:"amount"`
	Reference   string    `json:"reference"`
	Tag         string    `json:"tag,omitempty"`
	RequestedAt time.Time `json:"requested_at"`
}

// Requested is published by the api when a client's request was accepted.
type Requested struct {
	Payment
	// CallbackURL is the request's own webhook URL (POST /api/stk-push's
	// callback_url, docs/WEBHOOKS.md#a-callback-url-per-request): checked by
	// the api, told of the payment's stk.completed by the webhooks worker
	// as one more endpoint of the client. Absent when none; only here, not
	// on the payment's later events.
	CallbackURL string `json:"callback_url,omitempty"`
}

// Dispatched is published by the dispatcher when Daraja accepted the push.
type Dispatched struct {
	Payment
	MerchantRequestID   string `json:"merchant_request_id"`
	CheckoutRequestID   string `json:"checkout_request_id"`
	ResponseDescription string `json:"response_description,omitempty"`
	CustomerMessage     string `json:"customer_message,omitempty"`
}

// Completed is the final outcome of a payment, whoever learnt it.
type Completed struct {
	Payment
	// ResultCode is Daraja's ResultCode as a string ("0", "1032"), or its
	// errorCode ("400.002.02") when it refused the push.
	ResultCode string `json:"result_code"`
	ResultDesc string `json:"result_desc"`
	// Receipt is the M-Pesa receipt number; only on success.
	Receipt string `json:"receipt,omitempty"`
	// TransactionDate is Daraja's TransactionDate in TransactionDateLayout,
	// East Africa Time; only on success.
	TransactionDate   string    `json:"transaction_date,omitempty"`
	Source            string    `json:"source"`
	MerchantRequestID string    `json:"merchant_request_id,omitempty"`
	CheckoutRequestID string    `json:"checkout_request_id,omitempty"`
	CompletedAt       time.Time `json:"completed_at"`
}

// LateResult is Daraja's outcome of a payment learnt after stkgate had
// already finished it with an outcome of its own (FollowsCode, a
// stkgate.* code such as CodeNoAnswer): a callback that came late, or was
// kept while it could not be applied. The payment's final outcome stays
// what it was; this is what Daraja says happened, for the merchant and for
// an operator to reconcile (a paid "Unknown" has its receipt here).
type LateResult struct {
	Payment
	// FollowsCode is the result code of the stk.completed it follows.
	FollowsCode     string `json:"follows_result_code"`
	ResultCode      string `json:"result_code"`
	ResultDesc      string `json:"result_desc"`
	Receipt         string `json:"receipt,omitempty"`
	TransactionDate string `json:"transaction_date,omitempty"`
	// Source is where it was learnt: SourceCallback.
	Source            string    `json:"source"`
	MerchantRequestID string    `json:"merchant_request_id,omitempty"`
	CheckoutRequestID string    `json:"checkout_request_id,omitempty"`
	LearntAt          time.Time `json:"learnt_at"`
}

// Event is one of Requested, Dispatched, Completed or LateResult.
type Event interface {
	Type() string
	// Base returns the payment the event is about.
	Base() Payment
}

// Type implements Event.
func (Requested) Type() string { return TypeRequested }

// Type implements Event.
func (Dispatched) Type() string { return TypeDispatched }

// Type implements Event.
func (Completed) Type() string { return TypeCompleted }

// Type implements Event.
func (LateResult) Type() string { return TypeLateResult }

// Base implements Event.
func (p Payment) Base() Payment { return p }

// Subject is the subject an event of type typ for trackingID is published on.
func Subject(typ, trackingID string) string { return typ + "." + trackingID }

// PaymentSubjects is the filter of every event of trackingID, whatever its
// type: stk.*.<id>. The newest message on it (the leader's last_by_subj)
// is the payment's latest event.
func PaymentSubjects(trackingID string) string { return Subject("stk.*", trackingID) }

// MsgID is the Nats-Msg-Id of an event, <tracking_id>:<event>, so that a
// retried publish is dropped by JetStream's duplicate window. It is also the
// envelope's CloudEvents id.
func MsgID(typ, trackingID string) string {
	return trackingID + ":" + strings.TrimPrefix(typ, "stk.")
}

// msgIDOf is MsgID, but for a late success: a late failure may be followed
// by the success that replaces it (LateReplaces), which must not be dropped
// as the failure's duplicate.
func msgIDOf(ev Event, id string) string {
	if l, ok := ev.(LateResult); ok && l.ResultCode == "0" {
		return MsgID(ev.Type(), id) + ":success"
	}
	return MsgID(ev.Type(), id)
}

// TrackingIDOf returns the last token of a subject: the tracking id.
func TrackingIDOf(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}

// Envelope is a CloudEvents 1.0 event in structured JSON mode, its data
// as received.
type Envelope = EnvelopeOf[json.RawMessage]

// EnvelopeOf is the envelope with its data of type D: Encode writes the
// event itself as the data, and a reader may decode the data in the same
// pass as the envelope (api/projector's Decode).
type EnvelopeOf[D any] struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            D         `json:"data"`
}

// Encode wraps ev in an envelope from source at time now and returns the
// subject to publish on, its Nats-Msg-Id and the body.
func Encode(source string, ev Event, now time.Time) (subject, msgID string, body []byte, err error) {
	id := ev.Base().TrackingID
	if id == "" {
		return "", "", nil, fmt.Errorf("encode %s: empty tracking id", ev.Type())
	}
	// One Marshal of the envelope with the event in it: the event
	// marshalled first and put in as a json.RawMessage was scanned again
	// (compacted) inside the envelope's, for the same bytes.
	env := EnvelopeOf[Event]{
		SpecVersion:     SpecVersion,
		ID:              msgIDOf(ev, id),
		Source:          source,
		Type:            ev.Type(),
		Subject:         id,
		Time:            now.UTC(),
		DataContentType: "application/json",
		Data:            ev,
	}
	body, err = json.Marshal(env)
	if err != nil {
		return "", "", nil, fmt.Errorf("encode %s: %w", ev.Type(), err)
	}
	return Subject(ev.Type(), id), env.ID, body, nil
}

// Decode parses an envelope and its typed payload. Every error wraps
// ErrMalformed: no retry can make such a message decodable.
func Decode(body []byte) (Envelope, Event, error) {
	var env Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return env, nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if env.SpecVersion != SpecVersion {
		return env, nil, fmt.Errorf("%w: specversion %q", ErrMalformed, env.SpecVersion)
	}
	var ev Event
	switch env.Type {
	case TypeRequested:
		var r Requested
		if err := decodeData(env.Data, &r); err != nil {
			return env, nil, err
		}
		ev = r
	case TypeDispatched:
		var d Dispatched
		if err := decodeData(env.Data, &d); err != nil {
			return env, nil, err
		}
		ev = d
	case TypeCompleted:
		var c Completed
		if err := decodeData(env.Data, &c); err != nil {
			return env, nil, err
		}
		ev = c
	case TypeLateResult:
		var l LateResult
		if err := decodeData(env.Data, &l); err != nil {
			return env, nil, err
		}
		ev = l
	default:
		return env, nil, fmt.Errorf("%w: unknown type %q", ErrMalformed, env.Type)
	}
	p := ev.Base()
	if p.TrackingID == "" || p.TrackingID != env.Subject {
		return env, nil, fmt.Errorf("%w: data tracking_id %q does not match subject %q", ErrMalformed, p.TrackingID, env.Subject)
	}
	return env, ev, nil
}

func decodeData(data json.RawMessage, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return fmt.Errorf("%w: no data", ErrMalformed)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: data: %v", ErrMalformed, err)
	}
	return nil
}

// MaskPhone hides all but the last 3 characters of a phone number for logs:
// 254712345678 is *********678. Fewer than 3 digits left to guess would not
// hide a number, so one shorter than 7 characters is hidden whole.
func MaskPhone(phone string) string {
	r := []rune(phone)
	if len(r) < 7 {
		return strings.Repeat("*", len(r))
	}
	return strings.Repeat("*", len(r)-3) + string(r[len(r)-3:])
}

// CallbackPath is where callback-ingest takes Safaricom's callbacks; the
// tracking id and its callback token follow it (<id>/<token>), so a callback
// names the payment it is for and proves it was sent to the URL stkgate gave.
const CallbackPath = "/hooks/stk-push/"

// CallbackURL is the CallBackURL given to Daraja for a payment: base is the
// public URL of callback-ingest (CALLBACK_BASE_URL), token the payment's
// CallbackSecrets.Token. The token is a path segment, not a query
// parameter: Daraja's handling of a query string is not documented. An
// empty token gives the URL of the pushes sent before callback tokens,
// whose callbacks are kept but never applied.
func CallbackURL(base, trackingID, token string) string {
	u := strings.TrimRight(base, "/") + CallbackPath + trackingID
	if token != "" {
		u += "/" + token
	}
	return u
}
