package dispatcher

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// The gateway answers 503 to a push Daraja
// processed; the customer answers the prompt (pays) a second later (within
// the 503's Retry-After of 5 s), and the callback is late or lost (Daraja's callbacks
// come seconds to two minutes later, and get lost). The retry finds no
// stk.completed and no subscriber lock any more: it is accepted, and the
// customer gets a second prompt for the same tracking id. The probe within
// UncertainRetryWindow meets the lock instead.
func TestServiceUnavailableThenAnsweredPromptIsNotPushedAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.RetryMaxElapsed = time.Minute })
	p := newPayment()
	// The customer pays after 1 s; the callback does not arrive (yet).
	h.fake.Script(p.Phone, darajatest.Script{NoCallback: true, CallbackDelay: time.Second})
	h.proxy.hideAnswers(1)
	h.request(p)
	h.start()
	waitFor(t, "a retry after the 503", func() bool { return len(h.fakePushes(p.Phone)) >= 2 })
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
	waitFor(t, "the retry after the 503", func() bool { return len(h.fakePushes(p.Phone)) >= 2 })
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
				waitFor(t, "B on the phone's list", func() bool {
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
	waitFor(t, "the first push", func() bool { return len(h.fakePushes(a.Phone)) >= 1 })
	h.stop()
	if got := h.fakePushes(a.Phone)[0].Body.CallBackURL; got != callbackURL(a.TrackingID) {
		t.Errorf("the phone's first push went to the request accepted second (B); want A's")
	}
}
