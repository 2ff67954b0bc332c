package dispatcher

import (
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// Daraja's one-minute waits ("Unable to lock subscriber", "Quota
// Violation") are spent in JetStream, not in a worker: with one worker, a
// request that must wait does not hold up the requests behind it.
func TestLongWaitDoesNotHoldAWorker(t *testing.T) {
	t.Parallel()
	// The wait is as long as wait.For's: the others are pushed while it runs,
	// whatever the machine's pace (at 2 s, a loaded CI machine pushed two
	// of them after it).
	h := newHarness(t, func(c *Config) {
		c.Concurrency = 1
		c.LockedWait = wait.Timeout
		c.RetryMaxElapsed = time.Minute
		c.deferAbove = 500 * time.Millisecond
	})
	waiting, others := newPayment(), []events.Payment{newPayment(), newPayment(), newPayment()}
	h.fake.Script(waiting.Phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailLocked}})
	h.request(waiting)
	for _, p := range others {
		h.request(p)
	}
	h.start()
	wait.For(t, "the requests behind the waiting one pushed", func() bool {
		for _, p := range others {
			if len(h.fakePushes(p.Phone)) == 0 {
				return false
			}
		}
		return true
	})
	if n := len(h.fakePushes(waiting.Phone)); n != 1 {
		t.Fatalf("%d pushes to the waiting phone once the others were pushed, want 1: the others waited for its wait", n)
	}
	h.waitSettled()
	h.stop()

	pushes := h.fakePushes(waiting.Phone)
	if len(pushes) != 2 || !pushes[1].Accepted {
		t.Fatalf("%d pushes to the waiting phone, want 2, the second accepted", len(pushes))
	}
	if gap := pushes[1].At.Sub(pushes[0].At); gap < h.cfg.LockedWait {
		t.Errorf("retried %v after the lock, want at least %v", gap, h.cfg.LockedWait)
	}
	for _, p := range others {
		got := h.fakePushes(p.Phone)
		if len(got) != 1 || !got[0].Accepted {
			t.Fatalf("%d pushes to %s, want 1 accepted", len(got), p.Phone)
		}
		// The single worker was free while the first request waited.
		if !got[0].At.Before(pushes[1].At) {
			t.Errorf("a request behind the waiting one was pushed at %v, after the wait ended (%v): the wait held the worker",
				got[0].At, pushes[1].At)
		}
	}
	if n := len(h.logLines("Daraja asks to wait before the next push: waiting in JetStream, keeping the phone's lock")); n != 1 {
		t.Errorf("%d deferrals logged, want 1", n)
	}
	if rec := h.record(waiting.TrackingID); rec.State != events.AttemptAccepted || rec.Calls != 2 {
		t.Errorf("attempt record %+v, want accepted after 2 calls", rec)
	}
	if n := len(h.stored(waiting.TrackingID)[events.TypeDispatched]); n != 1 {
		t.Errorf("%d stk.dispatched, want 1", n)
	}
}

// A wait that would overrun the retry budget is not deferred: the payment
// is given up at once, as before.
func TestLongWaitPastTheBudgetGivesUp(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.LockedWait = 10 * time.Second
		c.RetryMaxElapsed = 3 * time.Second
		c.deferAbove = 500 * time.Millisecond
	})
	p := newPayment()
	h.fake.Script(p.Phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailLocked}})
	h.request(p)
	h.start()
	h.waitSettled()
	h.stop()
	if n := len(h.fakePushes(p.Phone)); n != 1 {
		t.Errorf("%d pushes, want 1", n)
	}
	if rec := h.record(p.TrackingID); rec.State != events.AttemptGaveUp {
		t.Errorf("attempt record %+v, want gave_up", rec)
	}
}
