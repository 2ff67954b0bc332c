package dispatcher

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// callbackMaxCallTime is callback-ingest's maxCallTime (callback-ingest/
// confirm.go): an attempt record still "sending" that long after its SentAt
// is taken for a call that is over, and a failure callback 2 s
// (CALLBACK_FAST_FAILURE) after that is counted as the customer's answer.
// That holds only if no push reaches Daraja later than this after the
// record said sending.
const callbackMaxCallTime = time.Minute

// The dispatcher's own bound keeps half of callback-ingest's: a push may
// also spend a round trip's timeout on the wire after it leaves.
func TestSendWithinFitsTheCallbackBound(t *testing.T) {
	if sendWithin > callbackMaxCallTime/2 {
		t.Errorf("sendWithin %s, more than half of callback-ingest's maxCallTime (%s)", sendWithin, callbackMaxCallTime)
	}
}

// TestPushLeavesWithinMaxCallTimeOfSending: a push waiting in the Daraja
// client (for a slot under DARAJA_MAX_RPS behind other calls, for a token)
// must reach Daraja within callback-ingest's maxCallTime of its record
// saying sending, or not at all. Before sendWithin nothing bounded that
// wait: with DARAJA_MAX_RPS 10 and DISPATCH_CONCURRENCY 1024 (both
// allowed) the line alone is 100 s. A failure callback (Daraja's for an
// earlier call, or a forger's with the CallBackURL an earlier call carried)
// coming after the minute is counted, and the customer prompted a moment
// later who pays is recorded Failed. The clock is a tenth of the real one:
// sendWithin 3 s against a maxCallTime of 6 s, and the limiter allows one
// call in 6.5 s: the token fetch takes it, and the push waits 6.5 s.
func TestPushLeavesWithinMaxCallTimeOfSending(t *testing.T) {
	t.Parallel()
	const scale = 10
	maxCallTime := callbackMaxCallTime / scale
	var (
		mu      sync.Mutex
		arrival time.Time
		rec     events.Attempt
		recOK   bool
		h       *harness
	)
	h = newHarness(t, func(c *Config) {
		c.Daraja.MaxRPS = 1 / (65.0 / scale)
		c.sendWithin = sendWithin / scale
		c.RetryMaxElapsed = time.Minute
		c.ShutdownTimeout = time.Second
	})
	p := newPayment()
	h.proxy.setGate(func(int) bool {
		mu.Lock()
		defer mu.Unlock()
		if arrival.IsZero() {
			// The record as the push arrives: its own call's, written
			// before it left.
			arrival = time.Now().UTC()
			rec, recOK = h.recordIfAny(p.TrackingID)
		}
		return true
	})
	h.request(p)
	h.start()
	wait.For(t, "the push to reach Daraja", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !arrival.IsZero()
	})
	mu.Lock()
	defer mu.Unlock()
	if !recOK || rec.State != events.AttemptSending {
		t.Fatalf("the push arrived with its record %+v (found %v), want sending", rec, recOK)
	}
	if arrival.Sub(rec.SentAt) > maxCallTime {
		t.Fatalf("the push reached Daraja %s after its record said sending, more than callback-ingest's maxCallTime (%s, scaled)",
			arrival.Sub(rec.SentAt).Round(time.Millisecond), maxCallTime)
	}
}

// recordIfAny is the attempt record of a payment, if there is one yet.
func (h *harness) recordIfAny(trackingID string) (events.Attempt, bool) {
	kv, err := h.ns.JS.KeyValue(context.Background(), events.AttemptsBucket)
	if err != nil {
		return events.Attempt{}, false
	}
	e, err := kv.Get(context.Background(), trackingID)
	if err != nil {
		return events.Attempt{}, false
	}
	var a events.Attempt
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return events.Attempt{}, false
	}
	return a, true
}
