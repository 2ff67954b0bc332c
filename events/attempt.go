package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// AttemptsBucket is the JetStream key-value bucket where the dispatcher
// records, durably and before it calls Daraja, what it is about to do and
// what came of it; the key is the tracking id. Daraja has no idempotency, so
// this record is what keeps a redelivered stk.requested from prompting the
// customer twice, and what tells the reconciler which pushes may have gone
// out without an answer.
const AttemptsBucket = "STK_ATTEMPTS"

// Attempt states.
const (
	// AttemptSending: a push request is (or was) on its way to Daraja; if
	// nothing follows, its fate is unknown and it must not be repeated.
	AttemptSending = "sending"
	// AttemptNotSent: the last push cannot have reached Daraja (connection
	// refused, 503, spike arrest…): it is safe to try again.
	AttemptNotSent = "not_sent"
	// AttemptAccepted: Daraja accepted the push (CheckoutRequestID known).
	AttemptAccepted = "accepted"
	// AttemptRefused: Daraja refused the push; the outcome is final.
	AttemptRefused = "refused"
	// AttemptAmbiguous: the push may have reached the customer but its
	// answer was lost; only a callback or the reconciler can settle it.
	AttemptAmbiguous = "ambiguous"
	// AttemptGaveUp: retries of pushes that never reached Daraja were given up.
	AttemptGaveUp = "gave_up"
)

// Attempt is the value stored under a tracking id in AttemptsBucket.
type Attempt struct {
	TrackingID string `json:"tracking_id"`
	State      string `json:"state"`
	// Calls counts the push requests sent to Daraja so far.
	Calls             int    `json:"calls"`
	MerchantRequestID string `json:"merchant_request_id,omitempty"`
	CheckoutRequestID string `json:"checkout_request_id,omitempty"`
	// ErrorCode and ErrorMessage are of the last failed call.
	ErrorCode    string `json:"error_code,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`
	// FirstSentAt is when a push request first left for Daraja: the retry
	// budget counts from then.
	FirstSentAt time.Time `json:"first_sent_at,omitzero"`
	// SentAt is when the latest push request left for Daraja: a prompt it
	// opened lives from then on (a push deferred for a minute and accepted
	// on its second call prompted the customer at SentAt, not FirstSentAt).
	SentAt time.Time `json:"sent_at,omitzero"`
	// Uncertain: an earlier call's answer said it was not processed, but
	// nothing guarantees it (a 503 from the gateway). A later "Unable to
	// lock subscriber" may then be this payment's own prompt, and the push
	// must not be sent again.
	Uncertain bool `json:"uncertain,omitempty"`
	// UncertainAt is when the first push answered that way left: a push
	// after it is sent only while the prompt it may have opened must still
	// be open (the dispatcher's UncertainRetryWindow).
	UncertainAt time.Time `json:"uncertain_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// GetAttempt reads trackingID's record from kv (AttemptsBucket) with its
// revision; found is false when there is none. A record that cannot be
// decoded is an error wrapping ErrMalformed.
func GetAttempt(ctx context.Context, kv jetstream.KeyValue, trackingID string) (a Attempt, rev uint64, found bool, err error) {
	e, err := kv.Get(ctx, trackingID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return a, 0, false, nil
	case err != nil:
		return a, 0, false, fmt.Errorf("read attempt record %s: %w", trackingID, err)
	}
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return a, e.Revision(), true, fmt.Errorf("%w: attempt record %s: %w", ErrMalformed, trackingID, err)
	}
	return a, e.Revision(), true, nil
}

// AttemptFromLeader reads trackingID's record from the leader of the
// bucket's stream, as GetAttempt reads it from any replica: a replica
// that lags may still hold an earlier call's record (LastMsgFromLeader).
// A deleted or purged record is not found.
func AttemptFromLeader(ctx context.Context, js jetstream.JetStream, trackingID string) (a Attempt, found bool, err error) {
	m, err := LastMsgFromLeader(ctx, js, "KV_"+AttemptsBucket, "$KV."+AttemptsBucket+"."+trackingID)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return a, false, nil
	case err != nil:
		return a, false, fmt.Errorf("read attempt record %s: %w", trackingID, err)
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return a, false, nil
	}
	if err := json.Unmarshal(m.Data, &a); err != nil {
		return a, true, fmt.Errorf("%w: attempt record %s: %w", ErrMalformed, trackingID, err)
	}
	return a, true, nil
}

// AttemptsConfig is the bucket's definition. A record lives as long as the
// STK stream keeps the request (RequestRetention): a dispatcher consumer
// recreated from the start of the stream redelivers every request it
// holds, and each must find its record.
func AttemptsConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      AttemptsBucket,
		Description: "stkgate: the dispatcher's push attempts, by tracking id",
		History:     1,
		TTL:         RequestRetention,
		Storage:     jetstream.FileStorage,
		Replicas:    atLeastOne(replicas),
	}
}

// The push log: one message per push request sent to Daraja, published
// before the request leaves, on stkpush.<tracking_id>. It is the second,
// independent record that a payment may have prompted its customer: should
// STK_ATTEMPTS be lost or purged, a redelivered request still finds that a
// push went out (and the reconciler that it may have prompted), and is never
// pushed again.
const (
	PushLogStreamName = "STK_PUSHES"
	PushLogSubjectAll = "stkpush.>"
)

// PushLogSubject is the subject of tracking id's pushes: stkpush.<id>.
func PushLogSubject(trackingID string) string { return "stkpush." + trackingID }

// PushLogMaxPerSubject bounds the pushes kept per payment; the newest stay,
// and one is enough to know a push went out.
const PushLogMaxPerSubject = 64

// PushLogStreamConfig is the STK_PUSHES stream: each message is the attempt
// record (Attempt, state sending) as it was when the push left. It keeps
// them as long as the STK stream keeps requests.
func PushLogStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              PushLogStreamName,
		Description:       "stkgate: every STK push request sent to Daraja, by tracking id",
		Subjects:          []string{PushLogSubjectAll},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          atLeastOne(replicas),
		Duplicates:        2 * time.Minute,
		MaxAge:            RequestRetention,
		MaxMsgsPerSubject: PushLogMaxPerSubject,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
	}
}

// EnsurePushLogStream creates the STK_PUSHES stream or brings it up to date,
// leaving a matching one alone (see EnsureStream).
func EnsurePushLogStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	return ensureStreamConfig(ctx, js, PushLogStreamConfig(replicas))
}

// PromptLifetime is how long a customer has to answer an STK prompt, with a
// margin for Daraja's callback to arrive (DARAJA.md: callbacks come seconds
// to about two minutes after the push). An ambiguous push is never repeated
// within it.
const PromptLifetime = 3 * time.Minute
