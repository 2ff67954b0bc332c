package dispatcher

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// A push answered 503 after Daraja processed it opens a prompt the
// dispatcher cannot see. Its retry is a probe: sent while that prompt must
// still be open, Daraja answers "Unable to lock subscriber" and the payment
// waits for its callback. A retry later than that could find the prompt
// answered, its callback lost, and prompt the customer a second time. So a
// push after a 503 leaves within UncertainRetryWindow of the 503'd push, or
// not at all (docs/DARAJA.md: a prompt stays open for seconds at least).
func TestServiceUnavailableIsRetriedOnlyWhileItsPromptMustBeOpen(t *testing.T) {
	t.Parallel()
	// The window must outlast the first push's own answer on a loaded
	// machine: a 2 s one closed before the 503 came back in a CI run at
	// load average 25, and nothing was probed.
	const window = 10 * time.Second
	h := newHarness(t, func(c *Config) {
		c.RetryMaxElapsed = 5 * time.Minute
		// The probe must not wait for the backoff, which would send it
		// 30 s or more later, after the window (and after wait.For's 20 s).
		c.RetryInitialInterval = time.Minute
		c.UncertainRetryWindow = window
	})
	p := newPayment()
	h.proxy.hideAnswers(1)
	h.request(p)
	h.start()
	wait.For(t, "the probe", func() bool { return len(h.fakePushes(p.Phone)) == 2 })
	h.waitSettled()
	h.stop()

	pushes := h.fakePushes(p.Phone)
	if len(pushes) != 2 || !pushes[0].Accepted || pushes[1].Accepted || pushes[1].ErrorCode != daraja.CodeGeneric {
		t.Fatalf("pushes %+v: want the processed one, then one refused with the subscriber lock", pushes)
	}
	if gap := pushes[1].At.Sub(pushes[0].At); gap >= window {
		t.Errorf("the retry came %v after the 503'd push, want within %v", gap, window)
	}
	if rec := h.record(p.TrackingID); rec.State != events.AttemptAmbiguous || rec.UncertainAt.IsZero() {
		t.Errorf("record %+v, want ambiguous, with the uncertain push's time", rec)
	}
}

// The customer answered the prompt of a push whose answer was a 503, and
// the callback was lost. A retry now would be accepted: a second prompt. When
// the retry cannot leave within the window, the payment is not pushed again
// but waits for its callback (and ends Unknown without one).
func TestNoRetryAfterAServiceUnavailableOnceItsPromptMayBeAnswered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.RetryMaxElapsed = time.Minute
		c.UncertainRetryWindow = time.Nanosecond // no probe can leave in time
	})
	p := newPayment()
	h.proxy.hideAnswers(1)
	h.request(p)
	h.start()
	wait.For(t, "the processed push", func() bool { return len(h.accepted(p.TrackingID)) == 1 })
	h.fake.Flush() // the customer answers; the callback goes nowhere
	h.waitSettled()
	h.stop()

	if n := len(h.fakePushes(p.Phone)); n != 1 {
		t.Errorf("%d pushes, want 1: a retry would prompt the customer again", n)
	}
	if got := h.stored(p.TrackingID)[events.TypeCompleted]; len(got) != 0 {
		t.Errorf("completed %+v, want none: the customer may have paid", got)
	}
	if rec := h.record(p.TrackingID); rec.State != events.AttemptAmbiguous {
		t.Errorf("record %+v, want ambiguous", rec)
	}
}

// A dispatcher that stopped after a 503 leaves the record not_sent and
// uncertain. The delivery after it, past the window, does not push.
func TestRedeliveryPastTheWindowOfAServiceUnavailableIsNotPushed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		at   time.Duration // UncertainAt before now; 0: a record written before UncertainAt existed
	}{
		{"a minute ago", time.Minute},
		{"record without the time", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			p := newPayment()
			rec := serviceUnavailableRecord(p, time.Now().UTC().Add(-time.Minute))
			rec.UncertainAt = time.Time{}
			if tc.at > 0 {
				rec.UncertainAt = time.Now().UTC().Add(-tc.at)
			}
			h.putRecord(rec)
			h.request(p)
			h.start()
			h.waitSettled()
			h.stop()

			wantNotPushedAmbiguous(t, h, p)
			if got := h.stored(p.TrackingID)[events.TypeCompleted]; len(got) != 0 {
				t.Errorf("completed %+v, want none", got)
			}
		})
	}
}

// A redelivery within a 503'd push's window does not push either: the
// delivery that got the 503 retries within the window itself, and another
// delivery (another instance, whose clock may be behind) could take the
// window for open when it has closed. It looks again once the window has
// closed, and the push is then ambiguous (review of the dispatcher's
// look-again for a push in the air: with it, a redelivery could meet a
// fresh 503's record).
func TestRedeliveryWithinTheWindowOfAServiceUnavailableIsNotPushed(t *testing.T) {
	t.Parallel()
	// A window long enough that the delivery surely comes within it.
	h := newHarness(t, func(c *Config) { c.UncertainRetryWindow = 10 * time.Second })
	p := newPayment()
	h.putRecord(serviceUnavailableRecord(p, time.Now().UTC()))
	h.request(p)
	h.start()
	wait.For(t, "the record to move on", func() bool { return h.record(p.TrackingID).State != events.AttemptNotSent })
	h.waitSettled()
	h.stop()
	wantNotPushedAmbiguous(t, h, p)
}

// serviceUnavailableRecord is the record of p's push that left at sent and
// was answered 503: not sent, but uncertain since sent.
func serviceUnavailableRecord(p events.Payment, sent time.Time) events.Attempt {
	return events.Attempt{TrackingID: p.TrackingID, State: events.AttemptNotSent, Calls: 1,
		ErrorCode: "http.503", ErrorMessage: "Service Unavailable (not a Daraja answer)",
		FirstSentAt: sent, SentAt: sent, Uncertain: true, UncertainAt: sent, UpdatedAt: sent}
}

// tooLate is the line of a push answered 503 that is not tried again.
const tooLate = "push outcome unknown: it may have reached the customer; not retrying, waiting for the callback"

// The gateway answers 503 to a push Daraja
// processed; the customer answers the prompt (pays) a few seconds later
// (within the 503's Retry-After of 5 s), and the callback is late or lost (Daraja's callbacks
// come seconds to two minutes later, and get lost). A retry after that finds no
// stk.completed and no subscriber lock any more: it is accepted, and the
// customer gets a second prompt for the same tracking id. The probe within
// UncertainRetryWindow meets the lock instead.
//
// The customer answers after the window: a prompt answered within it is
// the case the window does not cover (docs/DARAJA.md). One who paid after
// 1 s was prompted twice in a CI run at load average 20, where the retry,
// sent within the window, reached the fake a second after the first push.
func TestServiceUnavailableThenAnsweredPromptIsNotPushedAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.RetryMaxElapsed = time.Minute })
	p := newPayment()
	// The customer pays after 3 s; the callback does not arrive (yet).
	h.fake.Script(p.Phone, darajatest.Script{NoCallback: true, CallbackDelay: 3 * time.Second})
	h.proxy.hideAnswers(1)
	h.request(p)
	h.start()
	// On a loaded machine the retry may come too late to be safe
	// (UncertainRetryWindow): then none is sent, which is also right.
	wait.For(t, "a retry after the 503, or none once too late", func() bool {
		return len(h.fakePushes(p.Phone)) >= 2 || len(h.logLines(tooLate)) > 0
	})
	if len(h.fakePushes(p.Phone)) < 2 {
		t.Log("the machine was too slow to retry within UncertainRetryWindow: the probe was not exercised")
	}
	h.waitSettled()
	h.stop()
	if n := len(h.accepted(p.TrackingID)); n != 1 {
		t.Errorf("%d pushes accepted by Daraja for one tracking id, want 1 (a second prompt)", n)
	}
}

// A push answered 503 after Daraja processed it
// (the customer has a prompt, and pays), then the retry meets a refusal
// that says nothing about the first call: a firewall's HTML 403 in front
// of Daraja. The payment is published Failed (http.403) and its phone
// released, although the customer may pay (here: pays) the first prompt:
// the callback that comes later cannot move the Failed.
func TestRefusalAfterAServiceUnavailableIsAmbiguous(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.RetryMaxElapsed = time.Minute })
	p := newPayment()
	h.fake.Script(p.Phone, darajatest.Script{FailFirst: []darajatest.Failure{
		darajatest.FailServiceUnavailableAfterAccept, darajatest.FailHTML403}})
	h.request(p)
	h.start()
	// On a loaded machine the retry may come too late to be safe: then
	// none is sent, and the push stays ambiguous all the same.
	wait.For(t, "the retry after the 503, or none once too late", func() bool {
		return len(h.fakePushes(p.Phone)) >= 2 || len(h.logLines(tooLate)) > 0
	})
	if len(h.fakePushes(p.Phone)) < 2 {
		t.Log("the machine was too slow to retry within UncertainRetryWindow: the refusal was not exercised")
	}
	h.waitSettled()
	h.stop()
	if got := h.stored(p.TrackingID)[events.TypeCompleted]; len(got) != 0 {
		t.Errorf("completed %+v, want none: the first call prompted the customer, who may pay", got)
	}
	if rec := h.record(p.TrackingID); rec.State != events.AttemptAmbiguous {
		t.Errorf("record state %q, want ambiguous", rec.State)
	}
}

// A holds the phone's lock and B (accepted after A)
// waits on the phone's list. A's round sends nothing (here the attempt
// record cannot be written: its bucket is away for a moment; equally the
// push log, or a stop between attempts): A releases the lock and naks itself, but is on
// no waiting list, so B's next look finds the phone free and B is pushed
// before A.
func TestHeldRoundKeepsItsPlaceOnThePhone(t *testing.T) {
	t.Parallel()
	var h *harness
	var once sync.Once
	a, b := newPayment(), newPayment()
	b.Phone = a.Phone
	h = newHarness(t, func(c *Config) {
		c.RecheckDelay = 2 * time.Second
		c.beforeSending = func(id string) {
			if id != a.TrackingID {
				return
			}
			once.Do(func() {
				h.request(b)
				wait.For(t, "B on the phone's list", func() bool {
					q, _, err := phones{kv: h.bucket(events.PhonesConfig(1, 0))}.queue(context.Background(), a.Phone)
					return err == nil && len(q) == 1
				})
				ctx := context.Background()
				if err := h.ns.JS.DeleteStream(ctx, "KV_"+events.AttemptsBucket); err != nil {
					t.Error(err)
				}
				go func() {
					time.Sleep(700 * time.Millisecond)
					if _, err := h.ns.JS.CreateKeyValue(ctx, events.AttemptsConfig(1)); err != nil {
						t.Error(err)
					}
				}()
			})
		}
	})
	h.request(a)
	h.start()
	wait.For(t, "the first push", func() bool { return len(h.fakePushes(a.Phone)) >= 1 })
	h.stop()
	if got := h.fakePushes(a.Phone)[0].Body.CallBackURL; got != callbackURL(a.TrackingID) {
		t.Errorf("the phone's first push went to the request accepted second (B); want A's")
	}
}

// The check that a retry after a 503 is still within UncertainRetryWindow
// must be the last thing before the push leaves. Here the retry starts in
// time, but writing its records takes longer than the window (a slow
// JetStream, a GC pause); meanwhile the customer answers the first prompt and
// its callback is lost. A push now would be accepted: a second prompt.
func TestRetryThatWouldLeaveAfterTheUncertainWindowIsNotSent(t *testing.T) {
	t.Parallel()
	const window = 300 * time.Millisecond
	var h *harness
	var calls sync.Map
	p := newPayment()
	h = newHarness(t, func(c *Config) {
		c.RetryMaxElapsed = time.Minute
		c.UncertainRetryWindow = window
		c.beforeSending = func(id string) {
			if id != p.TrackingID {
				return
			}
			n, _ := calls.LoadOrStore(id, new(int))
			*n.(*int)++
			if *n.(*int) == 2 { // the retry: slow, and the customer pays meanwhile
				h.fake.Flush()
				time.Sleep(2 * window)
			}
		}
	})
	h.proxy.hideAnswers(1)
	h.request(p)
	h.start()
	wait.For(t, "the processed push", func() bool { return len(h.accepted(p.TrackingID)) == 1 })
	h.waitSettled()
	h.stop()

	if n := len(h.accepted(p.TrackingID)); n != 1 {
		t.Errorf("%d pushes accepted by Daraja for one tracking id, want 1 (a second prompt)", n)
	}
	if got := h.stored(p.TrackingID)[events.TypeCompleted]; len(got) != 0 {
		t.Errorf("completed %+v, want none: the customer paid", got)
	}
	if rec := h.record(p.TrackingID); rec.State != events.AttemptAmbiguous {
		t.Errorf("record %+v, want ambiguous", rec)
	}
}

// The retry after a 503 may wait inside the Daraja client too: for a slot
// under DARAJA_MAX_RPS (shared with the reconciler's queries), for a token.
// Here the retry's records are written in time, then it queues behind other
// calls for longer than the window; meanwhile the customer answers the first
// prompt, its callback lost. It must not leave.
func TestRetryQueuedInTheClientPastTheUncertainWindowIsNotSent(t *testing.T) {
	t.Parallel()
	const window = time.Second
	var h *harness
	var calls sync.Map
	var others *daraja.Client
	p := newPayment()
	h = newHarness(t, func(c *Config) {
		c.RetryMaxElapsed = time.Minute
		c.UncertainRetryWindow = window
		c.Daraja.MaxRPS = 10
		c.beforeSending = func(id string) {
			if id != p.TrackingID {
				return
			}
			n, _ := calls.LoadOrStore(id, new(int))
			*n.(*int)++
			if *n.(*int) == 2 { // the retry: the customer pays, 20 queries queue
				h.fake.Flush()
				// They take their places in the limiter's line before the
				// push asks for one: all started, and two of them through.
				var started sync.WaitGroup
				for range 20 {
					started.Add(1)
					go func() {
						started.Done()
						others.Query(context.Background(), "ws_CO_none")
					}()
				}
				started.Wait()
				wait.For(t, "two of the queries through the limiter", func() bool { return len(h.fake.Queries()) >= 3 })
			}
		}
	})
	others, _ = daraja.New(h.cfg.Daraja) // shares the process's limiter
	if _, err := others.Query(context.Background(), "ws_CO_none"); err == nil {
		t.Fatal("query of an unknown CheckoutRequestID answered")
	}
	h.proxy.hideAnswers(1)
	h.request(p)
	h.start()
	wait.For(t, "the processed push", func() bool { return len(h.accepted(p.TrackingID)) >= 1 })
	h.waitSettled()
	h.stop()

	if n := len(h.accepted(p.TrackingID)); n != 1 {
		t.Errorf("%d pushes accepted by Daraja for one tracking id, want 1 (a second prompt)", n)
	}
	if rec := h.record(p.TrackingID); rec.State != events.AttemptAmbiguous {
		t.Errorf("record %+v, want ambiguous", rec)
	}
}

// wantNotPushedAmbiguous: p was not pushed, and its record is ambiguous
// (its callback or the reconciler decides).
func wantNotPushedAmbiguous(t *testing.T, h *harness, p events.Payment) {
	t.Helper()
	if n := len(h.fakePushes(p.Phone)); n != 0 {
		t.Errorf("%d pushes, want none", n)
	}
	if got := h.record(p.TrackingID); got.State != events.AttemptAmbiguous {
		t.Errorf("record %+v, want ambiguous", got)
	}
}
