package dispatcher

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// A request handed back for its client's share keeps its place on its
// phone: a later request for the same phone, of any client, does not
// overtake it while it waits (promise 3: first come, first served).
func TestHandedBackRequestKeepsItsPlaceOnThePhone(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.Concurrency = 2 // a client alone may have one request in flight
		c.clientWait = 2 * time.Second
	})
	var open atomic.Bool
	h.proxy.setGate(func(int) bool { return open.Load() })
	x, r1, r2 := newPayment(), newPayment(), newPayment()
	x.Client, r1.Client, r2.Client = "shop", "shop", "shop"
	r2.Phone = r1.Phone
	h.request(x)
	h.start()
	wait.For(t, "x's push in flight", func() bool { return h.proxy.arrived() == 1 })
	h.request(r1)
	wait.For(t, "r1 handed back for the client's share", func() bool {
		for _, l := range h.logLines("client at its share of the workers: waiting for the other clients' requests") {
			if l["tracking_id"] == r1.TrackingID {
				return true
			}
		}
		return false
	})
	open.Store(true)
	wait.For(t, "x done", func() bool {
		info, err := h.consumerInfo(context.Background())
		return err == nil && info.NumAckPending == 1 && len(h.accepted(x.TrackingID)) == 1
	})
	h.request(r2)
	wait.For(t, "a push to the phone", func() bool { return len(h.fakePushes(r1.Phone)) > 0 })
	if got := h.fakePushes(r1.Phone)[0].Body.CallBackURL; got != callbackURL(r1.TrackingID) {
		t.Errorf("the phone's first push went to %s, want the earlier request %s", got, r1.TrackingID)
	}
}

// A request past half of its deliveries is worked on whatever its client's
// share: the waits for a share never use up the deliveries a request needs
// to reach a final state.
func TestRequestPastHalfItsDeliveriesGoesWhateverItsShare(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.Concurrency = 2 // a client alone may have one request in flight
		c.clientWait = 50 * time.Millisecond
		c.tuneConsumer = func(cc *jetstream.ConsumerConfig) { cc.MaxDeliver = 4 }
	})
	var open atomic.Bool
	h.proxy.setGate(func(int) bool { return open.Load() })
	x, r := newPayment(), newPayment()
	x.Client, r.Client = "shop", "shop"
	h.request(x)
	h.start()
	wait.For(t, "x's push in flight", func() bool { return h.proxy.arrived() == 1 })
	h.request(r)
	// x is still in flight: r is handed back once, then goes at its
	// second delivery.
	wait.For(t, "r's push while x's is in flight", func() bool { return h.proxy.arrived() == 2 })
	open.Store(true)
	h.waitSettled()
	h.stop()
	for _, p := range []events.Payment{x, r} {
		if n := len(h.accepted(p.TrackingID)); n != 1 {
			t.Errorf("%s: %d accepted pushes, want 1", p.TrackingID, n)
		}
	}
	if n := len(h.logLines("client at its share of the workers: waiting for the other clients' requests")); n != 1 {
		t.Errorf("%d hand-backs logged, want 1", n)
	}
}
