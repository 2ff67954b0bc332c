package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/worker"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// bucket opens (creating if need be) a bucket the dispatcher uses.
func (h *harness) bucket(cfg jetstream.KeyValueConfig) jetstream.KeyValue {
	h.t.Helper()
	kv, err := worker.EnsureBucket(context.Background(), h.ns.JS, cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	return kv
}

// putRecord writes an attempt record as an earlier dispatcher would have.
func (h *harness) putRecord(a events.Attempt) {
	h.t.Helper()
	body, err := json.Marshal(a)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.bucket(events.AttemptsConfig(1)).Put(context.Background(), a.TrackingID, body); err != nil {
		h.t.Fatal(err)
	}
}

// record reads back the attempt record of a payment.
func (h *harness) record(trackingID string) events.Attempt {
	h.t.Helper()
	e, err := h.bucket(events.AttemptsConfig(1)).Get(context.Background(), trackingID)
	if err != nil {
		h.t.Fatalf("attempt record of %s: %v", trackingID, err)
	}
	var a events.Attempt
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		h.t.Fatal(err)
	}
	return a
}

// accepted are the pushes the fake accepted for a payment.
func (h *harness) accepted(trackingID string) []darajatest.Push {
	return h.fake.AcceptedPushes(darajatest.WithCallbackURL(callbackURL(trackingID)))
}

// complete publishes stk.completed for p, as callback-ingest does when the
// callback comes.
func (h *harness) complete(p events.Payment) {
	h.t.Helper()
	pub := events.Publisher{JS: h.ns.JS, Source: "stkgate/callback-ingest"}
	c := events.Completed{Payment: p, ResultCode: "0", ResultDesc: "The service request is processed successfully.",
		Source: events.SourceCallback, CompletedAt: time.Now().UTC()}
	if _, err := pub.Publish(context.Background(), c); err != nil {
		h.t.Fatal(err)
	}
}

func TestRedeliveryAfterPushOfUnknownFateIsNotPushed(t *testing.T) {
	t.Parallel()
	for _, state := range []string{events.AttemptSending, events.AttemptAmbiguous} {
		t.Run(state, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			p := newPayment()
			// The crashed dispatcher recorded the attempt, pushed, and died
			// before recording the answer and acking, longer ago than any
			// call lasts (a record sending within that is looked at again:
			// TestRedeliveryDuringAnotherDeliverysPushPushesOnceThatWasNotSent).
			sent := time.Now().UTC().Add(-time.Hour)
			h.putRecord(events.Attempt{TrackingID: p.TrackingID, State: state, Calls: 1, FirstSentAt: sent, UpdatedAt: sent})
			client, err := daraja.New(h.cfg.Daraja)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.Push(context.Background(), daraja.PushRequest{
				Phone: p.Phone, Amount: p.Amount, AccountReference: p.Reference, TransactionDesc: TransactionDesc,
				CallbackURL: callbackURL(p.TrackingID),
			}); err != nil {
				t.Fatal(err)
			}
			h.request(p)
			h.start()
			h.waitSettled()
			h.stop()

			if n := len(h.accepted(p.TrackingID)); n != 1 {
				t.Errorf("fake accepted %d pushes, want exactly the crashed dispatcher's one", n)
			}
			if n := len(h.fakePushes(p.Phone)); n != 1 {
				t.Errorf("fake saw %d pushes, want 1", n)
			}
			if got := h.stored(p.TrackingID); len(got) != 1 {
				t.Errorf("events of %d types stored, want only the request: the callback or reconciler decides", len(got))
			}
			if n := len(h.logLines("an earlier delivery may have prompted the customer: not pushing again; the callback or the reconciler settles it")); n != 1 {
				t.Errorf("%d warnings about the push of unknown fate, want 1", n)
			}
			if n := len(h.logLines(lookingAgain)); n != 0 {
				t.Errorf("looked again %d times for a call an hour over, want 0", n)
			}
			if rec := h.record(p.TrackingID); rec.State != state || rec.Calls != 1 {
				t.Errorf("record %+v changed, want %s after 1 call", rec, state)
			}
		})
	}
}

// A delivery that finds another's push in the air (the record says sending,
// its call not over yet) looks again once the call must be over, rather
// than leave the request to that dispatcher's memory: make chaos (seed
// 1796666378212839937) had the consumer created again, a redelivery acked
// on "sending", the first dispatcher's push refused 429 (not sent) and that
// dispatcher killed before its retry; nothing pushed the request again, and
// it would have failed at its deadline, never pushed.
func TestRedeliveryDuringAnotherDeliverysPushPushesOnceThatWasNotSent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	p := newPayment()
	// The other dispatcher is calling Daraja now.
	h.anotherDeliveryAnswersNotSent(p, time.Now().UTC())
	if rec := h.record(p.TrackingID); rec.State != events.AttemptAccepted || rec.Calls != 2 {
		t.Errorf("record %+v, want accepted after 2 calls", rec)
	}
}

// The same when the other delivery's call is over but its answer is not
// yet written down (NATS slow to take the lock's renewal and the record's
// put, say): the delivery waits answerGrace for it too (review of the
// above: it acked 100 ms after the call's bound).
func TestRedeliveryWaitsForTheOtherDeliverysAnswerToBeWritten(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	// The call was recorded 61 s ago: past its send-by bound (30 s) and
	// the client's timeout (30 s), so it is over, its answer not written
	// yet; answerGrace (30 s) still holds. (Shortening the bounds instead
	// shortens this delivery's own send-by: a loaded CI run gave its push
	// up, not sent within 500 ms.)
	h.anotherDeliveryAnswersNotSent(newPayment(), time.Now().UTC().Add(-61*time.Second))
}

// lookingAgain is the line of a delivery that finds another's push in the
// air.
const lookingAgain = "a push of this request may be in flight from another delivery: looking again until its call must be over"

// anotherDeliveryAnswersNotSent plays another delivery of p that took the
// phone and recorded its push as sent at sent, then, once the dispatcher
// under test has looked at the request and left it for later, recorded
// Daraja's answer: 429, not sent (and was killed before retrying). It
// checks that the dispatcher under test pushes the request, once.
func (h *harness) anotherDeliveryAnswersNotSent(p events.Payment, sent time.Time) {
	h.t.Helper()
	if _, err := h.bucket(events.PhonesConfig(1, time.Hour)).Create(context.Background(), p.Phone, []byte(p.TrackingID)); err != nil {
		h.t.Fatal(err)
	}
	h.putRecord(events.Attempt{TrackingID: p.TrackingID, State: events.AttemptSending, Calls: 1, FirstSentAt: sent, SentAt: sent, UpdatedAt: sent})
	h.request(p)
	h.start()
	wait.For(h.t, "the delivery to look again later", func() bool { return len(h.logLines(lookingAgain)) > 0 })
	h.putRecord(events.Attempt{TrackingID: p.TrackingID, State: events.AttemptNotSent, Calls: 1, FirstSentAt: sent, SentAt: sent,
		ErrorCode: daraja.CodeSpikeArrest, ErrorMessage: "Spike Arrest Violation", UpdatedAt: time.Now().UTC()})
	wait.For(h.t, "the request pushed", func() bool { return len(h.accepted(p.TrackingID)) == 1 })
	h.waitSettled()
	h.stop()
	if n := len(h.fakePushes(p.Phone)); n != 1 {
		h.t.Errorf("fake saw %d pushes, want 1", n)
	}
}

func TestNotSentRecordIsPushedAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	p := newPayment()
	first := time.Now().UTC()
	h.putRecord(events.Attempt{TrackingID: p.TrackingID, State: events.AttemptNotSent, Calls: 1,
		ErrorCode: daraja.CodeSpikeArrest, ErrorMessage: "Spike Arrest Violation", FirstSentAt: first, UpdatedAt: first})
	h.request(p)
	h.start()
	h.waitSettled()
	h.stop()

	acc := h.accepted(p.TrackingID)
	if len(acc) != 1 {
		t.Fatalf("fake accepted %d pushes, want 1", len(acc))
	}
	rec := h.record(p.TrackingID)
	if !rec.SentAt.After(first) {
		t.Errorf("record's SentAt %v, want the second push's time, after the first's %v", rec.SentAt, first)
	}
	want := events.Attempt{TrackingID: p.TrackingID, State: events.AttemptAccepted, Calls: 2,
		MerchantRequestID: acc[0].MerchantRequestID, CheckoutRequestID: acc[0].CheckoutRequestID,
		FirstSentAt: first, SentAt: rec.SentAt, UpdatedAt: rec.UpdatedAt}
	if diff := cmp.Diff(want, rec); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
	if n := len(h.stored(p.TrackingID)[events.TypeDispatched]); n != 1 {
		t.Errorf("%d stk.dispatched, want 1", n)
	}
}

func TestRecordedOutcomeIsStoredOnceAndNotPushed(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, tc := range []struct {
		name string
		rec  events.Attempt
		want events.Event
	}{
		{
			name: "accepted",
			rec:  events.Attempt{State: events.AttemptAccepted, Calls: 1, MerchantRequestID: "m-1", CheckoutRequestID: "ws_CO_1"},
			want: events.Dispatched{MerchantRequestID: "m-1", CheckoutRequestID: "ws_CO_1"},
		},
		{
			name: "refused",
			rec:  events.Attempt{State: events.AttemptRefused, Calls: 1, ErrorCode: "400.002.02", ErrorMessage: "Bad Request - Invalid PhoneNumber"},
			want: events.Completed{ResultCode: "400.002.02", ResultDesc: "Bad Request - Invalid PhoneNumber", Source: events.SourceDispatcher, CompletedAt: now},
		},
		{
			name: "gave_up",
			rec:  events.Attempt{State: events.AttemptGaveUp, Calls: 3, ErrorCode: "500.003.02", ErrorMessage: "Spike Arrest Violation"},
			want: events.Completed{ResultCode: "500.003.02", ResultDesc: "Gave up after 3 attempts: Spike Arrest Violation", Source: events.SourceDispatcher, CompletedAt: now},
		},
	} {
		for _, inStream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/event_stored_before=%v", tc.name, inStream), func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, nil)
				p := newPayment()
				rec := tc.rec
				rec.TrackingID, rec.FirstSentAt, rec.UpdatedAt = p.TrackingID, now, now
				h.putRecord(rec)
				var want events.Event
				switch w := tc.want.(type) {
				case events.Dispatched:
					w.Payment = p
					want = w
				case events.Completed:
					w.Payment = p
					want = w
				}
				h.request(p)
				if inStream {
					// The earlier delivery stored the event and lost its ack.
					if _, err := (&events.Publisher{JS: h.ns.JS, Source: Source}).Publish(context.Background(), want); err != nil {
						t.Fatal(err)
					}
				}
				h.start()
				h.waitSettled()
				h.stop()

				if n := len(h.fake.Pushes()); n != 0 {
					t.Errorf("%d pushes, want none: the outcome was recorded", n)
				}
				got := h.stored(p.TrackingID)[want.Type()]
				if len(got) != 1 {
					t.Fatalf("%d %s stored, want 1", len(got), want.Type())
				}
				if diff := cmp.Diff(want, got[0]); diff != "" {
					t.Errorf("%s (-want +got):\n%s", want.Type(), diff)
				}
				restored := len(h.logLines("recorded outcome missing from the stream: publishing it from the attempt record"))
				if wantN := map[bool]int{false: 1, true: 0}[inStream]; restored != wantN {
					t.Errorf("%d restores logged, want %d", restored, wantN)
				}
			})
		}
	}
}

func TestAcceptedPushNotStoredIsStoredOnRedelivery(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.ShutdownTimeout = 500 * time.Millisecond })
	h.start()
	h.waitConsumer()
	h.narrowStream()
	p := newPayment()
	h.request(p)
	wait.For(t, "a publish retry", func() bool { return len(h.logLines("publish failed, retrying")) >= 1 })
	h.stop() // gives up publishing after the shutdown timeout
	if n := len(h.logLines("push accepted but stk.dispatched not yet stored; leaving the request for redelivery, which stores it from the attempt record")); n != 1 {
		t.Errorf("%d errors about the unstored event, want 1", n)
	}
	if rec := h.record(p.TrackingID); rec.State != events.AttemptAccepted {
		t.Fatalf("record %+v, want accepted", rec)
	}

	h.restoreStream()
	h.start()
	h.waitSettled()
	h.stop()
	acc := h.accepted(p.TrackingID)
	if len(acc) != 1 || len(h.fakePushes(p.Phone)) != 1 {
		t.Fatalf("%d pushes (%d accepted), want 1", len(h.fakePushes(p.Phone)), len(acc))
	}
	got := h.stored(p.TrackingID)[events.TypeDispatched]
	if len(got) != 1 {
		t.Fatalf("%d stk.dispatched, want 1", len(got))
	}
	if d := got[0].(events.Dispatched); d.CheckoutRequestID != acc[0].CheckoutRequestID || d.MerchantRequestID != acc[0].MerchantRequestID {
		t.Errorf("stored ids %q/%q, fake accepted %q/%q", d.MerchantRequestID, d.CheckoutRequestID, acc[0].MerchantRequestID, acc[0].CheckoutRequestID)
	}
}

// Two dispatchers share the consumer, whose ack wait is shorter than a
// push: JetStream redelivers requests to the other instance while the
// first is still pushing them.
func TestTwoInstancesPushOncePerRequest(t *testing.T) {
	t.Parallel()
	short := func(c *Config) {
		c.ProgressInterval = time.Hour // no progress reports but the push's own
		c.tuneConsumer = func(cc *jetstream.ConsumerConfig) {
			cc.AckWait = 200 * time.Millisecond
			cc.BackOff = nil
		}
	}
	h := newHarness(t, short)
	h.proxy.setDelay(400 * time.Millisecond) // each push outlasts the ack wait

	h2 := *h
	h2.done = nil
	const n = 30
	var pays []events.Payment
	for range n {
		p := newPayment()
		pays = append(pays, p)
		h.request(p)
	}
	h.start()
	h2.start()
	for _, p := range pays {
		wait.For(t, "every request dispatched", func() bool { return len(h.accepted(p.TrackingID)) == 1 })
	}
	h.waitSettled()
	h2.stop()
	h.stop()

	for _, p := range pays {
		if got := len(h.accepted(p.TrackingID)); got != 1 {
			t.Errorf("%s: %d accepted pushes, want 1", p.TrackingID, got)
		}
		if got := len(h.fakePushes(p.Phone)); got != 1 {
			t.Errorf("%s: %d pushes, want 1", p.TrackingID, got)
		}
		if got := len(h.stored(p.TrackingID)[events.TypeDispatched]); got != 1 {
			t.Errorf("%s: %d stk.dispatched, want 1", p.TrackingID, got)
		}
		if rec := h.record(p.TrackingID); rec.State != events.AttemptAccepted || rec.Calls != 1 {
			t.Errorf("%s: record %+v, want accepted after 1 call", p.TrackingID, rec)
		}
	}
	info, err := h.consumerInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered == 0 && len(h.logLines("an earlier delivery may have prompted the customer: not pushing again; the callback or the reconciler settles it")) == 0 &&
		len(h.logLines(lookingAgain)) == 0 {
		t.Error("no request was redelivered during its push: the test did not exercise the record")
	}
}

func TestOnePromptPerPhone(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	a, b, c := newPayment(), newPayment(), newPayment()
	b.Phone = a.Phone
	h.request(a)
	h.request(b)
	h.start()
	var first, second events.Payment
	wait.For(t, "a first push to the phone", func() bool { return len(h.fakePushes(a.Phone)) > 0 })
	if h.fakePushes(a.Phone)[0].Body.CallBackURL == callbackURL(a.TrackingID) {
		first, second = a, b
	} else {
		first, second = b, a
	}
	// A payment for another phone is not held up by the busy one.
	h.request(c)
	wait.For(t, "the other phone's push", func() bool { return len(h.accepted(c.TrackingID)) == 1 })
	wait.For(t, "the second request to wait for the phone", func() bool {
		info, err := h.consumerInfo(context.Background())
		return err == nil && info.NumRedelivered > 0
	})
	time.Sleep(10 * h.cfg.PhoneWait)
	if n := len(h.fakePushes(a.Phone)); n != 1 {
		t.Fatalf("%d pushes to the busy phone before its prompt was final, want 1", n)
	}

	// The customer answers; callback-ingest records the outcome.
	h.fake.Flush()
	h.complete(first)
	wait.For(t, "the second push after the first completed", func() bool { return len(h.accepted(second.TrackingID)) == 1 })
	h.waitSettled()
	h.stop()

	for _, p := range h.fakePushes(a.Phone) {
		if !p.Accepted {
			t.Errorf("push to the phone answered %s %q: the phone was not free", p.ErrorCode, p.ErrorMessage)
		}
	}
	if n := len(h.fakePushes(a.Phone)); n != 2 {
		t.Errorf("%d pushes to the phone, want 2", n)
	}
	if n := len(h.logLines("payment completed: phone released for the next payment")); n != 1 {
		t.Errorf("%d releases logged, want 1", n)
	}
}

func TestPhoneLockExpiresWithoutCompletion(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	h := newHarness(t, func(c *Config) { c.PhoneLockTTL = ttl })
	a, b := newPayment(), newPayment()
	b.Phone = a.Phone
	h.request(a)
	h.request(b)
	h.start()
	wait.For(t, "a first push to the phone", func() bool { return len(h.fakePushes(a.Phone)) == 1 })
	h.fake.Flush() // the prompt ends, but no stk.completed ever comes
	wait.For(t, "the second push after the lock expired", func() bool { return len(h.fakePushes(a.Phone)) == 2 })
	h.waitSettled()
	h.stop()

	pushes := h.fakePushes(a.Phone)
	for _, p := range pushes {
		if !p.Accepted {
			t.Errorf("push answered %s %q, want accepted", p.ErrorCode, p.ErrorMessage)
		}
	}
	// The lock was written just before the first push and lives ttl.
	if gap := pushes[1].At.Sub(pushes[0].At); gap < ttl-200*time.Millisecond {
		t.Errorf("second push %v after the first, want no sooner than the lock's TTL %v", gap, ttl)
	}
	for _, p := range []events.Payment{a, b} {
		if n := len(h.stored(p.TrackingID)[events.TypeDispatched]); n != 1 {
			t.Errorf("%d stk.dispatched, want 1", n)
		}
	}
}

func TestRefusedPushReleasesPhoneAtOnce(t *testing.T) {
	t.Parallel()
	// A long TTL: only the release can free the phone within the test.
	h := newHarness(t, func(c *Config) { c.PhoneLockTTL = time.Hour })
	a, b := newPayment(), newPayment()
	b.Phone = a.Phone
	h.fake.Script(a.Phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailInvalidPhone}})
	h.request(a)
	h.request(b)
	h.start()
	wait.For(t, "a push after the refusal", func() bool { return len(h.fake.AcceptedPushes(darajatest.WithPhone(a.Phone))) == 1 })
	h.waitSettled()
	h.stop()
	if n := len(h.fakePushes(a.Phone)); n != 2 {
		t.Errorf("%d pushes, want 2 (one refused, one accepted)", n)
	}
}

func TestPhoneBusyAtLastDeliveryGivesUp(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.PhoneLockTTL = time.Hour
		c.tuneConsumer = func(cc *jetstream.ConsumerConfig) { cc.MaxDeliver = 3; cc.BackOff = nil }
	})
	a, b := newPayment(), newPayment()
	b.Phone = a.Phone
	h.request(a)
	h.start()
	wait.For(t, "the first push", func() bool { return len(h.accepted(a.TrackingID)) == 1 })
	h.request(b)
	h.waitSettled()
	h.stop()

	got := h.stored(b.TrackingID)[events.TypeCompleted]
	if len(got) != 1 {
		t.Fatalf("%d stk.completed for the waiting request, want 1", len(got))
	}
	c := got[0].(events.Completed)
	if c.ResultCode != CodePhoneBusy || c.Source != events.SourceDispatcher {
		t.Errorf("completed %s from %s, want %s from the dispatcher", c.ResultCode, c.Source, CodePhoneBusy)
	}
	if rec := h.record(b.TrackingID); rec.State != events.AttemptGaveUp || rec.Calls != 0 {
		t.Errorf("record %+v, want gave_up without a call", rec)
	}
	if n := len(h.fakePushes(a.Phone)); n != 1 {
		t.Errorf("%d pushes to the phone, want 1", n)
	}
}

func TestRequestsForAPhoneArePushedInOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	pays := []events.Payment{newPayment(), newPayment(), newPayment(), newPayment()}
	for i := range pays {
		pays[i].Phone = pays[0].Phone
	}
	h.request(pays[0])
	h.start()
	wait.For(t, "the first push", func() bool { return len(h.accepted(pays[0].TrackingID)) == 1 })
	for _, p := range pays[1:] {
		h.request(p)
	}
	// All three wait on the phone's list before the first completes.
	wait.For(t, "the others to queue", func() bool {
		q, _, err := phones{kv: h.bucket(events.PhonesConfig(1, 0))}.queue(context.Background(), pays[0].Phone)
		return err == nil && len(q) == 3
	})
	for i, p := range pays[:len(pays)-1] {
		h.fake.Flush()
		h.complete(p)
		next := pays[i+1]
		wait.For(t, "the next push", func() bool { return len(h.fakePushes(p.Phone)) == i+2 })
		if got := h.fakePushes(p.Phone)[i+1].Body.CallBackURL; got != callbackURL(next.TrackingID) {
			t.Errorf("push %d went to %s, want the request made %d-th (%s)", i+2, got, i+2, next.TrackingID)
		}
	}
	h.waitSettled()
	h.stop()
	for _, p := range h.fakePushes(pays[0].Phone) {
		if !p.Accepted {
			t.Errorf("push answered %s %q, want accepted", p.ErrorCode, p.ErrorMessage)
		}
	}
}

func TestGoneWaiterStopsHoldingUpThePhone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// completed: the earlier waiter's payment was finished elsewhere.
		// Otherwise it left no trace and is passed over once unseen for
		// queueGone.
		completed bool
	}{{"finished elsewhere", true}, {"unseen for too long", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) {
				c.queueStale = 200 * time.Millisecond
				c.queueGone = time.Hour
				if !tc.completed {
					c.queueGone = time.Second
				}
			})
			p, gone := newPayment(), newPayment()
			gone.Phone = p.Phone
			if tc.completed {
				h.complete(gone)
			}
			// The earlier request waited for the phone, then was settled
			// elsewhere, or its request cannot come back, without leaving
			// the list.
			ph := phones{kv: h.bucket(events.PhonesConfig(1, 0))}
			if err := ph.join(context.Background(), p.Phone, waiter{ID: gone.TrackingID, Seq: 0, Seen: time.Now().UTC()}, time.Hour); err != nil {
				t.Fatal(err)
			}
			h.request(p)
			h.start()
			wait.For(t, "the push once the gone waiter no longer holds the phone", func() bool { return len(h.accepted(p.TrackingID)) == 1 })
			h.waitSettled()
			h.stop()
			if q, _, err := ph.queue(context.Background(), p.Phone); err != nil || len(q) != 0 {
				t.Errorf("waiting list after the push: %+v, %v; want empty", q, err)
			}
		})
	}
}

// The waiting list stays first come, first served while the dispatchers
// are busy: a waiter whose redelivery is late (every worker busy) is
// unseen for longer than queueStale, but as long as its request still
// waits, a later request does not overtake it.
func TestLateWaiterKeepsItsPlace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ph := phones{kv: h.bucket(events.PhonesConfig(1, 0))}
	ctx := context.Background()
	now := time.Now().UTC()
	for _, tc := range []struct {
		name     string
		unseen   time.Duration
		waiting  bool
		overtake bool
	}{
		{"seen lately", time.Second, true, false},
		{"late, still waiting", 10 * time.Minute, true, false},
		{"late, moved on", 10 * time.Minute, false, true},
		{"unseen for longer than gone", 3 * time.Hour, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			phone := newPayment().Phone
			early, later := "early-"+phone, "later-"+phone
			if err := ph.join(ctx, phone, waiter{ID: early, Seq: 1, Seen: now.Add(-tc.unseen)}, 24*time.Hour); err != nil {
				t.Fatal(err)
			}
			qt := queueTimes{stale: 30 * time.Second, gone: 2 * time.Hour,
				waiting: func(_ context.Context, id string) bool { return id == early && tc.waiting }}
			_, before, err := ph.acquire(ctx, phone, later, 2, now, qt)
			if err != nil {
				t.Fatal(err)
			}
			if got := before == ""; got != tc.overtake {
				t.Errorf("the later request took the phone: %v (before it: %q), want %v", got, before, tc.overtake)
			}
		})
	}
}

// A payment's completion can be handled while its push still writes the
// lock (the push path refreshes it once Daraja has answered, and a fast
// failure callback can come before that): the releaser's delete then meets
// a newer revision. If the holder is still the completed payment, the lock
// must go anyway, or the phone's next payment waits out the lock's three
// minutes (and may give up as busy); if another payment took the phone
// meanwhile, its lock stays.
func TestReleaseOutlivesARacingWrite(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	kv := h.bucket(events.PhonesConfig(1, 0))
	ph := phones{kv: kv}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// race runs between the releaser's read of the lock and its
		// delete.
		race     func(t *testing.T, phone, holder string, rev uint64) (next string)
		released bool
	}{
		{"none", func(*testing.T, string, string, uint64) string { return "" }, true},
		{"the holder's push refreshes the lock", func(t *testing.T, phone, holder string, rev uint64) string {
			if _, err := ph.refresh(ctx, phone, holder, rev); err != nil {
				t.Fatal(err)
			}
			return ""
		}, true},
		{"another payment takes the phone", func(t *testing.T, phone, _ string, rev uint64) string {
			if err := ph.release(ctx, phone, rev); err != nil {
				t.Fatal(err)
			}
			next := uuid.NewString()
			if _, before, err := ph.acquire(ctx, phone, next, 2, time.Now().UTC(), queueTimes{}); err != nil || before != "" {
				t.Fatalf("the next payment did not take the freed phone: %q, %v", before, err)
			}
			return next
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			phone, holder := newPayment().Phone, uuid.NewString()
			rev, before, err := ph.acquire(ctx, phone, holder, 1, time.Now().UTC(), queueTimes{})
			if err != nil || before != "" {
				t.Fatalf("acquire: %q, %v", before, err)
			}
			var next string
			racing := phones{kv: &beforeDelete{KeyValue: kv, run: func() { next = tc.race(t, phone, holder, rev) }}}
			released, err := racing.releaseHeldBy(ctx, phone, holder)
			if err != nil || released != tc.released {
				t.Fatalf("releaseHeldBy: %v, %v; want %v, nil", released, err, tc.released)
			}
			e, err := kv.Get(ctx, phone)
			switch {
			case next == "" && !errors.Is(err, jetstream.ErrKeyNotFound):
				t.Errorf("the lock of the completed payment is still there: %v", err)
			case next != "" && (err != nil || string(e.Value()) != next):
				t.Errorf("the next payment's lock is gone: %v", err)
			}
		})
	}
}

// beforeDelete runs run once, before the first Delete.
type beforeDelete struct {
	jetstream.KeyValue
	run func()
}

func (k *beforeDelete) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if run := k.run; run != nil {
		k.run = nil
		run()
	}
	return k.KeyValue.Delete(ctx, key, opts...)
}

// A dispatcher of the previous version created the consumer with a BackOff
// and MaxDeliver 10; starting this one brings it up to date, or waits for a
// phone would stretch to the BackOff's intervals and run out of deliveries.
func TestConsumerOfPreviousVersionIsUpdated(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := context.Background()
	old := events.DispatcherConsumer()
	old.MaxDeliver = 10
	old.MaxAckPending = 1024
	old.BackOff = []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute}
	if _, err := h.ns.JS.CreateOrUpdateConsumer(ctx, events.StreamName, old); err != nil {
		t.Fatal(err)
	}
	h.start()
	wait.For(t, "the dispatcher to start", func() bool { return len(h.logLines("dispatcher started")) == 1 })
	h.stop()
	info, err := h.consumerInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := events.DispatcherConsumer()
	if info.Config.MaxDeliver != want.MaxDeliver || len(info.Config.BackOff) != 0 || info.Config.MaxAckPending != want.MaxAckPending {
		t.Errorf("consumer MaxDeliver %d, BackOff %v, MaxAckPending %d; want %d, none, %d",
			info.Config.MaxDeliver, info.Config.BackOff, info.Config.MaxAckPending, want.MaxDeliver, want.MaxAckPending)
	}
}

// The lock lives a prompt's lifetime from Daraja's answer to the push, not
// from the moment the push was sent: the prompt is open from when Daraja
// processed it, and a slow answer (held here 700 ms after the fake took the
// push) must not eat into the lock. (Under load in CI, a push that took
// 700 ms let the phone's next payment be pushed 775 ms after the first
// reached Daraja, with a lock of 1 s.) The lock lives 2 s: with 1 s, a
// push whose send took 300 ms besides the hold on a loaded machine found
// its lock expired before the answer, and the renewal had nothing to
// renew (CI, 7 December); a real lock lives minutes, a call seconds.
func TestPhoneLockCountsFromThePushAnswer(t *testing.T) {
	t.Parallel()
	const ttl, hold = 2 * time.Second, 700 * time.Millisecond
	h := newHarness(t, func(c *Config) {
		c.PhoneLockTTL = ttl
		c.Daraja.BaseURL = holdPushAnswers(t, c.Daraja.BaseURL, hold)
	})
	a, b := newPayment(), newPayment()
	b.Phone = a.Phone
	h.request(a)
	h.request(b)
	h.start()
	wait.For(t, "a first push to the phone", func() bool { return len(h.fakePushes(a.Phone)) == 1 })
	h.fake.Flush() // the prompt ends, but no stk.completed ever comes
	wait.For(t, "the second push after the lock expired", func() bool { return len(h.fakePushes(a.Phone)) == 2 })
	h.waitSettled()
	h.stop()

	pushes := h.fakePushes(a.Phone)
	// The first answer left the fake hold after the first push arrived;
	// the lock, renewed then, lives ttl more. (Late is fine: nats-server
	// expires a key on a timer.)
	if gap := pushes[1].At.Sub(pushes[0].At); gap < hold+ttl-100*time.Millisecond {
		t.Errorf("second push %v after the first, want no sooner than the answer's hold %v and the lock's TTL %v", gap, hold, ttl)
	}
}

// holdPushAnswers puts a proxy before Daraja at base that holds every STK
// push's answer for hold after Daraja gave it, and returns its URL.
func holdPushAnswers(t *testing.T, base string, hold time.Duration) string {
	t.Helper()
	target, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(r *http.Response) error {
		if r.Request.URL.Path == daraja.PathPush {
			time.Sleep(hold) // the answer's hold, as a slow network's
		}
		return nil
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL
}
