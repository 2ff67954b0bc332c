package dispatcher

import (
	"testing"
)

// The consumer is deleted while no pull request of the dispatcher is
// waiting (every worker busy with a push): no "consumer deleted" notice
// reaches it, and its next pull finds no responder. It must find the
// consumer gone and create it again, not retry the pull for ever (make
// chaos saw both dispatchers stop pushing for good this way).
func TestConsumerDeletedBetweenPullsIsCreatedAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.Concurrency = 1 })
	h.proxy.setGate(func(int) bool { return false }) // the one worker's push is held
	busy := newPayment()
	h.request(busy)
	h.start()
	waitFor(t, "the held push", func() bool { return h.proxy.arrived() == 1 })
	h.deleteConsumer()
	h.proxy.setGate(nil)
	after := newPayment()
	h.request(after)
	waitFor(t, "the push after the deletion", func() bool { return len(h.accepted(after.TrackingID)) == 1 })
	h.waitSettled()
	h.stop()
	if n := len(h.accepted(busy.TrackingID)); n != 1 {
		t.Errorf("%d prompts of the request pushed during the deletion, want 1", n)
	}
}
