package projector_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
)

// A projector stopped while batches of small size are under way, some
// being decoded and some waiting for earlier ones, with malformed messages
// among them: it returns, and the next one applies every event it left,
// each payment ending completed; each malformed message is terminated once,
// and none holds back the batches after it.
func TestRunStoppedMidStreamLosesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var stories []story
	malformed := 0
	for i := range 40 {
		s := newStory([]string{"0", "1032"}[i%2])
		stories = append(stories, s)
		h.publish(s.requested)
		if i%5 == 0 {
			h.publishRaw("stk.completed."+uuid.NewString(), []byte("not json"))
			malformed++
		}
		h.publish(s.dispatched, s.completed)
	}
	cfg := h.config()
	cfg.BatchSize = 3
	stop := h.run(cfg)
	h.eventually("some applied", func() (bool, string) {
		_, err := h.store.Get(context.Background(), "acme", stories[0].id)
		return err == nil, "none yet"
	})
	stop()
	cfg.BatchSize = 2
	h.run(cfg)
	want := map[string]store.Record{}
	for _, s := range stories {
		want[s.id] = s.want(store.StageCompleted)
	}
	h.converge(want)
	h.settled()
	// Each termination is logged before its message is settled.
	h.eventually("every malformed message terminated", func() (bool, string) {
		n := strings.Count(h.logs.String(), "event terminated: malformed")
		return n == malformed, fmt.Sprintf("%d terminations logged, want %d", n, malformed)
	})
	if strings.Contains(h.logs.String(), "ack failed") {
		t.Errorf("acks failed:\n%s", h.logs.String())
	}
}
