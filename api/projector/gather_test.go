package projector

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A batch takes every event already received and those that follow
// closely, but does not wait out the linger for more once none comes:
// at a few hundred events a second the wait would be most of every
// event's time to the read model.
func TestGatherStopsWhenNoEventFollows(t *testing.T) {
	var waits []time.Duration
	script := []bool{true, true, false} // two events come at once, then none
	next := func(wait time.Duration) (jetstream.Msg, error) {
		waits = append(waits, wait)
		if len(waits) > len(script) || !script[len(waits)-1] {
			return nil, jetstream.ErrNoMessages
		}
		return nil, nil
	}
	msgs := gather(next, make([]jetstream.Msg, 1), 64, time.Now().Add(linger))
	if len(msgs) != 3 {
		t.Errorf("batch of %d, want 3: the first and the two that came at once", len(msgs))
	}
	if len(waits) != 3 {
		t.Fatalf("%d waits %v, want 3", len(waits), waits)
	}
	for i, w := range waits {
		if w > gap {
			t.Errorf("wait %d for a next event: %s, want at most %s", i, w, gap)
		}
	}
}

// Events that keep coming within the gap fill the batch up to its size.
func TestGatherFillsUpToBatchSize(t *testing.T) {
	calls := 0
	next := func(time.Duration) (jetstream.Msg, error) { calls++; return nil, nil }
	if msgs := gather(next, make([]jetstream.Msg, 1), 8, time.Now().Add(linger)); len(msgs) != 8 || calls != 7 {
		t.Errorf("batch of %d after %d calls, want 8 after 7", len(msgs), calls)
	}
}
