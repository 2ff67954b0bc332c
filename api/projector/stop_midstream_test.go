package projector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
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

// A projector stopped while the stream still holds events leaves none of
// those it was sent to the AckWait (30 s, the read model's lag after every
// such restart): once Run has returned, every message of its consumer still
// pending was handed back. Messages it pulled and did not take are what
// would be left: sent at the stop into a pull it had left open, or still
// in its buffer when DrainTimeout ran out (a DrainTimeout of 1 ns: none is
// applied after the stop).
func TestRunStopLeavesNothingToTheAckWait(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		drain time.Duration // 0: the harness's
	}{{"drained", 0}, {"DrainTimeout 1ns", time.Nanosecond}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			handedBack := h.handedBack()
			var stories []story
			for i := range 200 {
				s := newStory([]string{"0", "1032"}[i%2])
				stories = append(stories, s)
				h.publish(s.requested, s.dispatched, s.completed)
			}
			cfg := h.config()
			cfg.BatchSize = 3
			if tc.drain > 0 {
				cfg.DrainTimeout = tc.drain
			}
			stop := h.run(cfg)
			h.eventually("some applied", func() (bool, string) {
				_, err := h.store.Get(context.Background(), "acme", stories[0].id)
				return err == nil, "none yet"
			})
			stop()
			h.eventually("every pending message handed back", func() (bool, string) {
				info, err := h.consumerInfo()
				if err != nil {
					return false, err.Error()
				}
				n := handedBack()
				return info.NumAckPending == n, fmt.Sprintf("%d ack pending, %d handed back (delivered up to %d, acked up to %d)",
					info.NumAckPending, n, info.Delivered.Stream, info.AckFloor.Stream)
			})
			// The next projector applies what was handed back.
			h.run(cfg)
			want := map[string]store.Record{}
			for _, s := range stories {
				want[s.id] = s.want(store.StageCompleted)
			}
			h.converge(want)
			h.settled()
		})
	}
}

// handedBack counts the projector's messages nak'ed from now on, by stream
// sequence: the function returns how many distinct ones so far.
func (h *harness) handedBack() func() int {
	h.t.Helper()
	var mu sync.Mutex
	naked := map[uint64]bool{}
	subject := "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED." + events.StreamName + "." + events.ConsumerProjector
	sub, err := h.ns.Conn.Subscribe(subject, func(m *nats.Msg) {
		var a struct {
			StreamSeq uint64 `json:"stream_seq"`
		}
		if err := json.Unmarshal(m.Data, &a); err != nil {
			h.t.Errorf("nak advisory: %v", err)
			return
		}
		mu.Lock()
		naked[a.StreamSeq] = true
		mu.Unlock()
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.ns.Conn.Flush(); err != nil {
		h.t.Fatal(err)
	}
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(naked)
	}
}
