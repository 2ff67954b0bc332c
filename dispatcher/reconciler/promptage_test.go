package reconciler

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// A push deferred for a minute (a locked subscriber, a quota) and accepted
// at its second call prompted the customer at that call: the receipt wait
// counts from it, not from the first call, or a success learnt by query is
// published before its callback — and its receipt — could come.
func TestReceiptWaitCountsFromTheAcceptedPush(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.ReceiptWait = 2 * time.Second })
	p, resp := h.pushWithoutDispatched(darajatest.Script{ResultCode: "0", NoCallback: true, CallbackDelay: -1})
	a, _ := h.getAttempt(p.TrackingID)
	accepted := a.FirstSentAt
	a.FirstSentAt = accepted.Add(-time.Minute) // the deferred first call
	a.SentAt = accepted
	a.Calls = 2
	h.putAttempt(a)
	h.publish(events.Dispatched{Payment: p, MerchantRequestID: resp.MerchantRequestID, CheckoutRequestID: resp.CheckoutRequestID})
	h.start()
	got, stored := h.completion(p.TrackingID, wait)
	if got.Source != events.SourceQuery || got.ResultCode != "0" {
		t.Fatalf("completed %+v, want the query's success", got)
	}
	if d := stored.Sub(accepted); d < h.cfg.ReceiptWait {
		t.Errorf("published %s after the accepted push, within the receipt wait %s: a callback with the receipt could still come", d, h.cfg.ReceiptWait)
	}
}

// The attempt record is gone (STK_ATTEMPTS purged or lost) but the push log
// shows a push left: the request is not "never dispatched" (Failed), it is
// a push whose answer was lost — the customer may have paid.
func TestPushLoggedWithoutRecordIsNotFailedAsUndispatched(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := context.Background()
	if _, err := events.EnsurePushLogStream(ctx, h.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	p := h.newPayment()
	h.publish(events.Requested{Payment: p})
	sent := time.Now().UTC()
	body := []byte(`{"tracking_id":"` + p.TrackingID + `","state":"sending","calls":1,"first_sent_at":"` + sent.Format(time.RFC3339Nano) +
		`","sent_at":"` + sent.Format(time.RFC3339Nano) + `","updated_at":"` + sent.Format(time.RFC3339Nano) + `"}`)
	if _, err := h.ns.JS.Publish(ctx, events.PushLogSubject(p.TrackingID), body, jetstream.WithMsgID(p.TrackingID+":push:1")); err != nil {
		t.Fatal(err)
	}
	h.start()
	got, stored := h.completion(p.TrackingID, wait)
	if got.ResultCode != events.CodeNoAnswer {
		t.Errorf("completed %s %q, want %s: a push left", got.ResultCode, got.ResultDesc, events.CodeNoAnswer)
	}
	if d := stored.Sub(sent); d < h.cfg.PromptLifetime {
		t.Errorf("decided %s after the push, within the prompt's lifetime %s", d, h.cfg.PromptLifetime)
	}
}
