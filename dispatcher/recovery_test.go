package dispatcher

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// purgeStream empties one of the dispatcher's streams (a bucket is the
// stream KV_<bucket>), as an operator's mistake or a lost volume would.
func (h *harness) purgeStream(name string) {
	h.t.Helper()
	ctx := context.Background()
	s, err := h.ns.JS.Stream(ctx, name)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) deleteConsumer() {
	h.t.Helper()
	if err := h.ns.JS.DeleteConsumer(context.Background(), events.StreamName, events.ConsumerDispatcher); err != nil {
		h.t.Fatal(err)
	}
}

// Every request the stream holds is delivered again when the dispatcher's
// consumer is recreated (it delivers from the start of the stream), and
// the attempt records that would stop a second push may be gone too. What
// was pushed before must not be pushed again, whatever its state.
func TestNoPushAgainWhenTheConsumerAndRecordsAreGone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		purge []string // streams emptied besides the consumer's deletion
	}{
		{"consumer recreated", nil},
		{"consumer recreated, STK_ATTEMPTS purged", []string{"KV_" + events.AttemptsBucket}},
		{"consumer recreated, STK_ATTEMPTS and STK_PHONES purged", []string{"KV_" + events.AttemptsBucket, "KV_" + events.PhonesBucket}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) { c.Daraja.Timeout = heldAnswerTimeout })
			h.cfg.Daraja.BaseURL = h.fake.URL() // a reset must reach the client as one
			completed, open, ambiguous, refused, never := newPayment(), newPayment(), newPayment(), newPayment(), newPayment()
			h.fake.Script(ambiguous.Phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailTimeoutAfterAccept}})
			h.fake.Script(refused.Phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailInvalidPhone}})
			for _, p := range []events.Payment{completed, open, ambiguous, refused} {
				h.request(p)
			}
			h.start()
			h.waitSettled()
			h.complete(completed)
			h.stop()
			before := map[string]int{}
			for _, p := range []events.Payment{completed, open, ambiguous, refused} {
				before[p.TrackingID] = len(h.fakePushes(p.Phone))
				if before[p.TrackingID] != 1 {
					t.Fatalf("set-up: %d pushes for %s, want 1", before[p.TrackingID], p.TrackingID)
				}
			}

			h.deleteConsumer()
			for _, s := range tc.purge {
				h.purgeStream(s)
			}
			// A request never pushed still is, after all that.
			h.request(never)
			h.start()
			h.waitSettled()
			h.stop()

			for name, p := range map[string]events.Payment{"completed": completed, "dispatched, still open": open,
				"ambiguous": ambiguous, "refused": refused} {
				if n := len(h.fakePushes(p.Phone)) - before[p.TrackingID]; n != 0 {
					t.Errorf("%s payment: %d new pushes, want 0", name, n)
				}
			}
			if n := len(h.accepted(never.TrackingID)); n != 1 {
				t.Errorf("the request never pushed before: %d pushes accepted, want 1", n)
			}
			if got := h.stored(ambiguous.TrackingID); len(got[events.TypeCompleted])+len(got[events.TypeDispatched]) != 0 {
				t.Errorf("the ambiguous payment got events %v: only its callback or the reconciler may decide it", got)
			}
		})
	}
}

// Only the stream is left (STK_ATTEMPTS and STK_PUSHES both purged): a
// payment with stk.dispatched or stk.completed is still never pushed again.
func TestNoPushAgainWhenOnlyTheStreamIsLeft(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	completed, open := newPayment(), newPayment()
	h.request(completed)
	h.request(open)
	h.start()
	h.waitSettled()
	h.complete(completed)
	h.stop()
	h.deleteConsumer()
	h.purgeStream("KV_" + events.AttemptsBucket)
	h.purgeStream(events.PushLogStreamName)
	h.start()
	h.waitSettled()
	h.stop()
	for _, p := range []events.Payment{completed, open} {
		if n := len(h.fakePushes(p.Phone)); n != 1 {
			t.Errorf("%s: %d pushes, want 1", p.TrackingID, n)
		}
	}
}

// A 503 from the gateway usually means Daraja did not process the push,
// but nothing guarantees it. When it did, the customer has a prompt open:
// the retry meets "Unable to lock subscriber" — the payment's own prompt —
// and must not push again, nor fail the payment: its callback decides.
func TestServiceUnavailableAfterProcessingPromptsOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.RetryMaxElapsed = time.Minute
		// The retry must leave within the window: a loaded CI run's
		// push took 1.2 s of the default 2 s before its 503 came back,
		// and its retry 0.8 s more.
		c.UncertainRetryWindow = time.Minute
	})
	p := newPayment()
	h.proxy.hideAnswers(1)
	h.request(p)
	h.start()
	wait.For(t, "the retry", func() bool { return len(h.fakePushes(p.Phone)) == 2 })
	h.waitSettled()
	h.stop()

	pushes := h.fakePushes(p.Phone)
	if len(pushes) != 2 || !pushes[0].Accepted || pushes[1].Accepted || pushes[1].ErrorCode != daraja.CodeGeneric {
		t.Fatalf("pushes %+v: want the processed one, then one refused with the subscriber lock", pushes)
	}
	if n := len(h.accepted(p.TrackingID)); n != 1 {
		t.Errorf("%d pushes accepted, want 1", n)
	}
	got := h.stored(p.TrackingID)
	if n := len(got[events.TypeCompleted]) + len(got[events.TypeDispatched]); n != 0 {
		t.Errorf("%d events published, want none: the callback decides", n)
	}
	rec := h.record(p.TrackingID)
	if rec.State != events.AttemptAmbiguous || !rec.Uncertain || rec.Calls != 2 {
		t.Errorf("record %+v, want ambiguous and uncertain after 2 calls", rec)
	}
	if v, err := h.bucket(events.PhonesConfig(1, 0)).Get(context.Background(), p.Phone); err != nil || string(v.Value()) != p.TrackingID {
		t.Errorf("phone lock: %v, %v; want still held by the payment, whose prompt may be open", v, err)
	}
}

// A push that failed getting its token was never sent: the token
// endpoint's 503 does not make a later "Unable to lock subscriber" the
// payment's own prompt. The payment waits for the lock and is pushed.
func TestTokenServiceUnavailableIsNotUncertain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.RetryMaxElapsed = time.Minute })
	p := newPayment()
	h.fake.FailOAuth(1, darajatest.OAuthServiceUnavailable)
	h.fake.Script(p.Phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailLocked}})
	h.request(p)
	h.start()
	wait.For(t, "the push after the lock", func() bool { return len(h.accepted(p.TrackingID)) == 1 })
	h.waitSettled()
	h.stop()

	pushes := h.fakePushes(p.Phone)
	if len(pushes) != 2 || pushes[0].Failure != darajatest.FailLocked || !pushes[1].Accepted {
		t.Fatalf("pushes %+v: want one refused with the lock, then one accepted", pushes)
	}
	if rec := h.record(p.TrackingID); rec.State != events.AttemptAccepted || rec.Uncertain {
		t.Errorf("record %+v, want accepted and not uncertain", rec)
	}
}

// A 503 whose retries run out is not a failure either: the push may have
// prompted the customer. The gateway keeps answering 503 (an outage); the
// retries stop when the window after the first 503 closes.
func TestServiceUnavailableThenGivingUpIsAmbiguous(t *testing.T) {
	t.Parallel()
	// The window counts from the first push: it must outlast that push's
	// own answer on a loaded machine (a 500 ms one closed before the
	// 503 came back, in CI beside other jobs, and nothing was retried;
	// later a 2 s one did, at load average 20).
	const window = 10 * time.Second
	// A retry is checked against the window as it leaves, and the fake
	// sees it when it arrives: on a loaded machine, later.
	const arrivalSlack = 2 * time.Second
	h := newHarness(t, func(c *Config) {
		c.RetryMaxElapsed = time.Minute
		c.UncertainRetryWindow = window
	})
	p := newPayment()
	outage := make([]darajatest.Failure, 50)
	for i := range outage {
		outage[i] = darajatest.FailServiceUnavailable
	}
	h.fake.Script(p.Phone, darajatest.Script{FailFirst: outage})
	h.request(p)
	h.start()
	h.waitSettled()
	h.stop()
	pushes := h.fakePushes(p.Phone)
	if len(pushes) < 2 {
		t.Errorf("%d pushes, want the 503'd one and at least one retry within the window", len(pushes))
	}
	for _, push := range pushes[1:] {
		if gap := push.At.Sub(pushes[0].At); gap >= window+arrivalSlack {
			t.Errorf("a retry %v after the first 503'd push, want none after %v (and %v to arrive)", gap, window, arrivalSlack)
		}
	}
	if got := h.stored(p.TrackingID)[events.TypeCompleted]; len(got) != 0 {
		t.Errorf("completed %+v, want none: the customer may have been prompted", got)
	}
	if rec := h.record(p.TrackingID); rec.State != events.AttemptAmbiguous || rec.ErrorCode != "http.503" {
		t.Errorf("record %+v, want ambiguous with the 503's code", rec)
	}
}

// The callback of a push answered 503 after processing may come before the
// retry: the retry finds the payment completed and sends nothing.
func TestCompletedBeforeTheRetryIsNotPushedAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.RetryMaxElapsed = time.Minute
		c.RetryInitialInterval = 5 * time.Second // time for the callback
		c.UncertainRetryWindow = time.Minute
	})
	p := newPayment()
	h.proxy.hideAnswers(1)
	h.request(p)
	h.start()
	wait.For(t, "the push answered 503", func() bool {
		return len(h.logLines("push failed, retrying")) == 1
	})
	h.complete(p) // its callback, while the dispatcher waits to retry
	h.waitSettled()
	h.stop()
	if n := len(h.fakePushes(p.Phone)); n != 1 {
		t.Errorf("%d pushes, want 1", n)
	}
	if n := len(h.logLines("payment completed while its push was being retried: not pushing again")); n != 1 {
		t.Errorf("%d logs of the completion found before the retry, want 1", n)
	}
}

// The reconciler gives up a request it finds undispatched at its deadline
// by a compare-and-set on the attempt record; a dispatcher about to push it
// then loses the race. It must let go of the phone's lock it took, or the
// next payment for the phone waits out the lock's TTL.
func TestLosingTheRecordToTheReconcilerReleasesThePhone(t *testing.T) {
	t.Parallel()
	var h *harness
	var once sync.Once
	first, next := newPayment(), newPayment()
	next.Phone = first.Phone
	h = newHarness(t, func(c *Config) {
		c.PhoneLockTTL = time.Hour // only a release lets the next payment go
		c.beforeSending = func(id string) {
			if id != first.TrackingID {
				return
			}
			once.Do(func() {
				// The reconciler's notDispatched, between the dispatcher's
				// read of the record and its write.
				h.putRecord(events.Attempt{TrackingID: id, State: events.AttemptGaveUp,
					ErrorCode: "stkgate.not_dispatched", ErrorMessage: "No CheckoutRequestID", UpdatedAt: time.Now().UTC()})
			})
		}
	})
	h.request(first)
	h.start()
	wait.For(t, "the lost race", func() bool {
		return len(h.logLines("push not sent: cannot record the attempt or keep the phone's lock; retrying later")) == 1
	})
	h.request(next)
	wait.For(t, "the next payment's push", func() bool { return len(h.accepted(next.TrackingID)) == 1 })
	h.waitSettled()
	h.stop()
	if n := len(h.accepted(first.TrackingID)); n != 0 {
		t.Errorf("%d pushes of the given-up payment, want 0", n)
	}
	if got := h.stored(first.TrackingID)[events.TypeCompleted]; len(got) != 1 || got[0].(events.Completed).ResultCode != "stkgate.not_dispatched" {
		t.Errorf("given-up payment's completions %+v, want its recorded outcome once", got)
	}
}

// An operator deletes the dispatcher's consumer while it runs: it is
// created again, and requests keep being pushed, once each.
func TestDeletedConsumerIsCreatedAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	before := newPayment()
	h.request(before)
	h.start()
	h.waitSettled()
	h.deleteConsumer()
	after := newPayment()
	h.request(after)
	wait.For(t, "the push after the deletion", func() bool { return len(h.accepted(after.TrackingID)) == 1 })
	h.waitSettled()
	h.stop()
	if n := len(h.fakePushes(before.Phone)); n != 1 {
		t.Errorf("%d pushes of the request before the deletion, want 1", n)
	}
	if n := len(h.logLines("consumer was deleted: created again")); n < 1 {
		t.Errorf("no log of the consumer created again")
	}
}

// A payment's request stored again after its outcome (stkgate-admin dlq
// replay past the duplicate window) is not pushed, nor is the first copy
// delivered beside it, when the attempt record is gone: a payment finished
// without a push (not_dispatched, a give-up for a busy phone) has nothing
// in STK_PUSHES, and only its stk.completed, older than the replayed
// request, stops the push.
func TestNoPushForARequestStoredAgainAfterItsOutcome(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	p := newPayment()
	h.request(p)
	ctx := shortly(t)
	pub := events.Publisher{JS: h.ns.JS, Source: Source}
	if _, err := pub.Publish(ctx, events.Completed{Payment: p, ResultCode: "stkgate.not_dispatched",
		ResultDesc: "No CheckoutRequestID", Source: events.SourceDispatcher, CompletedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	// The attempt record the reconciler wrote with it is lost: the test
	// writes none.
	subject, msgID, body, err := events.Encode("stkgate/api", events.Requested{Payment: p}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Past the duplicate window the same Nats-Msg-Id would be stored
	// again; another stands for it here.
	if _, err := h.ns.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: body}, jetstream.WithMsgID(msgID+":replayed")); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.waitSettled()
	h.stop()
	if n := len(h.fakePushes(p.Phone)); n != 0 {
		t.Errorf("%d pushes for a payment finished as not dispatched, want 0", n)
	}
}
