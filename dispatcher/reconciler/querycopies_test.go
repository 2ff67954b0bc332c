package reconciler

import (
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// queryWindow is how long the held copies' queries are counted: a count of
// calls over time, so a window, not a condition.
const queryWindow = 3 * time.Second

// TestHeldCopiesShareOneQuery: every copy held on stkcb.confirm.<id> runs its
// own query loop while the payment is open, and nothing bounds the copies a
// forger holding one CallBackURL (and the CheckoutRequestID, no secret) can
// post: N failures within CALLBACK_FAST_FAILURE of the push, or N
// amount-mismatched successes at any time. The copies share one answer per
// CheckoutRequestID (queries.go), so N copies cost about what one costs, and
// Daraja's budget (DARAJA_MAX_RPS, shared with every client's pushes) is not
// eaten. Before: 16 queries in 3 s for one copy, 628 for 40.
func TestHeldCopiesShareOneQuery(t *testing.T) {
	// Not parallel: it counts queries over a window of time, which
	// tests sharing the cores would thin out unevenly.
	counts := map[int]int{}
	for _, n := range []int{1, 40} {
		h := newHarness(t, func(c *Config) {
			c.ReconcileAfter = time.Minute
			c.UnknownDeadline = 2 * time.Minute
			c.RequestDeadline = 3 * time.Minute
			c.PromptLifetime = 2 * time.Minute
			c.ReceiptWait = 2 * time.Minute
		})
		h.start()
		// The customer answers in a minute: Daraja says "still being
		// processed" all through the window.
		p, resp := h.dispatch(darajatest.Script{ResultCode: "0", CallbackDelay: time.Minute})
		for i := 0; i < n; i++ {
			h.holdFastFailure(p, resp.CheckoutRequestID)
		}
		h.waitFor("the first STK query", func() bool { return len(h.queriesFor(resp.CheckoutRequestID)) > 0 })
		time.Sleep(queryWindow)
		counts[n] = len(h.queriesFor(resp.CheckoutRequestID))
		t.Logf("%d held copies for one open payment: %d STK queries in about %s", n, counts[n], queryWindow)
		h.stopAll()
	}
	if counts[40] > 2*counts[1] {
		t.Errorf("40 held copies made %d STK queries, one made %d: want at most twice as many", counts[40], counts[1])
	}
}

// TestHeldCopiesGetTheFinalAnswerPromptly: a shared "still being processed"
// is reused only until the next interval, so once the customer answers, the
// copies learn it within an interval or two, and the payment is recorded
// once, with Daraja's answer.
func TestHeldCopiesGetTheFinalAnswerPromptly(t *testing.T) {
	// Not parallel: its bound is a latency, which tests sharing the
	// cores would measure instead.
	h := newHarness(t, func(c *Config) {
		c.ReconcileAfter = time.Minute
		c.UnknownDeadline = 2 * time.Minute
		c.ReceiptWait = time.Minute
	})
	h.start()
	const answerAfter = time.Second
	p, resp := h.dispatch(darajatest.Script{ResultCode: "1032", NoCallback: true, CallbackDelay: answerAfter})
	for i := 0; i < 20; i++ {
		h.holdForConfirmation(p, resp.CheckoutRequestID)
	}
	ev, stored := h.completion(p.TrackingID, 10*time.Second)
	if ev.ResultCode != "1032" || ev.Source != events.SourceQuery {
		t.Errorf("recorded %q from %s, want 1032 from the query", ev.ResultCode, ev.Source)
	}
	pushed := h.storedAt(events.TypeDispatched, p.TrackingID)
	if late := stored.Sub(pushed) - answerAfter; late > 2*h.cfg.QueryMaxInterval+time.Second {
		t.Errorf("recorded %s after Daraja had the answer, want within two intervals (%s)", late, h.cfg.QueryMaxInterval)
	}
	waitConfirmAcked(t, h, 10*time.Second)
	if n := h.completions(p.TrackingID); n != 1 {
		t.Errorf("%d stk.completed, want 1", n)
	}
	qs := h.queriesFor(resp.CheckoutRequestID)
	t.Logf("20 held copies: %d STK queries until the answer", len(qs))
	if last := qs[len(qs)-1]; last.ResultCode != "1032" {
		t.Errorf("last query answered %+v, want 1032", last)
	}
}
