package events

import (
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
	// FirstSentAt is when a push request first left for Daraja: the
	// customer's prompt, if any, lives from then on.
	FirstSentAt time.Time `json:"first_sent_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// AttemptsConfig is the bucket's definition. Records outlive any redelivery
// and any reconciliation; a week is plenty.
func AttemptsConfig(replicas int) jetstream.KeyValueConfig {
	if replicas < 1 {
		replicas = 1
	}
	return jetstream.KeyValueConfig{
		Bucket:      AttemptsBucket,
		Description: "stkgate: the dispatcher's push attempts, by tracking id",
		History:     1,
		TTL:         7 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// PromptLifetime is how long a customer has to answer an STK prompt, with a
// margin for Daraja's callback to arrive (DARAJA.md: callbacks come seconds
// to about two minutes after the push). An ambiguous push is never repeated
// within it.
const PromptLifetime = 3 * time.Minute
