package reconciler

import (
	"context"
	"strings"
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

// A push whose answer was lost got its callback, which callback-ingest kept
// but never applied (it died between keeping and publishing): the
// reconciler waits for callback-ingest's applier rather than finish the
// payment as Unknown when the prompt's lifetime has passed, and the
// applier's success, receipt and all, is the outcome.
func TestKeptCallbackIsWaitedForBeforeNoAnswer(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.RequestDeadline = time.Minute })
	ctx := context.Background()
	p := h.newPayment()
	h.publish(events.Requested{Payment: p})
	sent := time.Now().UTC()
	h.putAttempt(events.Attempt{TrackingID: p.TrackingID, State: events.AttemptAmbiguous, Calls: 1, FirstSentAt: sent, SentAt: sent, UpdatedAt: sent})
	if _, err := events.EnsureCallbackStream(ctx, h.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ns.JS.Publish(ctx, events.CallbackSubjectReceived(p.TrackingID), []byte(`{"Body":{}}`)); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.waitFor("the reconciler to wait for the kept callback past the prompt's lifetime, or to decide", func() bool {
		return h.completions(p.TrackingID) != 0 || time.Since(sent) > h.cfg.PromptLifetime &&
			strings.Contains(h.logs.String(), "a callback is kept for the payment but not applied yet")
	})
	if n := h.completions(p.TrackingID); n != 0 {
		t.Fatalf("%d stk.completed while the kept callback waits for the applier", n)
	}
	// callback-ingest's applier applies it.
	h.publish(events.Completed{Payment: p, ResultCode: "0", ResultDesc: "ok", Receipt: "SCL4XQ2B7K",
		Source: events.SourceCallback, CompletedAt: time.Now().UTC()})
	h.settled(wait)
	got, _ := h.completion(p.TrackingID, wait)
	if got.ResultCode != "0" || got.Receipt != "SCL4XQ2B7K" || h.completions(p.TrackingID) != 1 {
		t.Errorf("completed %+v (%d), want the callback's success only", got, h.completions(p.TrackingID))
	}
}

// The wait for a kept callback is bounded by RECONCILE_REQUEST_DEADLINE
// after it was kept: past it, the payment is finished as Unknown.
func TestKeptCallbackWaitIsBounded(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := context.Background()
	p := h.newPayment()
	h.publish(events.Requested{Payment: p})
	sent := time.Now().UTC()
	h.putAttempt(events.Attempt{TrackingID: p.TrackingID, State: events.AttemptAmbiguous, Calls: 1, FirstSentAt: sent, SentAt: sent, UpdatedAt: sent})
	if _, err := events.EnsureCallbackStream(ctx, h.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	ack, err := h.ns.JS.Publish(ctx, events.CallbackSubjectReceived(p.TrackingID), []byte(`{"Body":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	cbs, err := h.ns.JS.Stream(ctx, events.CallbackStreamName)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := cbs.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	got, stored := h.completion(p.TrackingID, wait)
	if got.ResultCode != events.CodeNoAnswer {
		t.Errorf("completed %s, want %s", got.ResultCode, events.CodeNoAnswer)
	}
	if d := stored.Sub(kept.Time); d < h.cfg.RequestDeadline {
		t.Errorf("decided %s after the callback was kept, within the request deadline %s", d, h.cfg.RequestDeadline)
	}
}
