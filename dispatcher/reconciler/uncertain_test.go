package reconciler

import (
	"testing"
	"time"

	"github.com/stkgate/stkgate/events"
)

// The dispatcher's record says not_sent, but
// Uncertain: an earlier call was answered 503 and may have prompted the
// customer (the dispatcher then defers or hands the request back, which
// keeps not_sent). Past RequestDeadline without the dispatcher moving it,
// the reconciler fails the payment as stkgate.not_dispatched (Failed),
// although the customer may have paid: the contract's Unknown.
func TestUncertainNotSentIsNotFailedAsUndispatched(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	p := h.newPayment()
	h.publish(events.Requested{Payment: p})
	at := time.Now().UTC().Add(-time.Minute)
	h.putAttempt(events.Attempt{TrackingID: p.TrackingID, State: events.AttemptNotSent, Calls: 1, Uncertain: true,
		ErrorCode: "http.503", ErrorMessage: "Service Unavailable (not a Daraja answer)",
		FirstSentAt: at, SentAt: at, UpdatedAt: at})
	h.start()
	got, _ := h.completion(p.TrackingID, wait)
	if got.ResultCode != events.CodeNoAnswer {
		t.Errorf("completed %s %q, want %s (Unknown): a 503'd call may have prompted the customer", got.ResultCode, got.ResultDesc, events.CodeNoAnswer)
	}
}
