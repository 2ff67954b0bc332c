package projector_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

// A projector stopped while a batch holding a payment's first completion
// fails (a lock timeout, any transient error: the batch is handed back)
// hands back the later batch holding the same payment's second completion
// too, instead of applying it: applied, it would decide the outcome (the
// first completion applied decides), and the first, redelivered, would
// change nothing: a paid payment shown cancelled.
func TestRunStopDoesNotApplyPastAHandedBackBatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	cfg.BatchSize = 1
	cfg.ApplyTimeout = time.Second // B1's attempt, blocked on the lock, fails after it
	first := h.run(cfg)
	s := newStory("0")
	h.publish(s.requested)
	h.converge(map[string]store.Record{s.id: s.want(store.StageRequested)})

	lock := h.lockReadModel()
	h.publish(s.completed)
	h.eventually("the first completion's batch waits for the lock", lock.waiting("stk_pushes", 1))
	// A second completion of the same payment, another outcome (a query's
	// answer), published raw past the deduplication.
	h.publishOtherCompletion(s)
	h.eventually("both completions delivered to the projector", func() (bool, string) {
		info, err := h.consumerInfo()
		if err != nil {
			return false, err.Error()
		}
		return info.NumAckPending == 2, fmt.Sprintf("%d ack pending", info.NumAckPending)
	})

	stopped := make(chan struct{})
	go func() { first(); close(stopped) }()
	h.eventually("the first completion's batch handed back", func() (bool, string) {
		return strings.Contains(h.logs.String(), "stopping with events not applied; handing them back"), "not yet"
	})
	// The database is fine again: what the stopping projector still
	// applies now commits.
	lock.release()
	<-stopped

	h.run(h.config())
	h.converge(map[string]store.Record{s.id: s.want(store.StageCompleted)})
	h.settled()
}

// As above, with the second completion started only once the first one's
// batch was handed back and settled: the batches under way fill every
// slot, so the second completion's batch starts after some of them are
// handed back, the first one's among them.
func TestRunStopDoesNotApplyPastABatchHandedBackBefore(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	cfg.BatchSize = 1
	cfg.ApplyTimeout = time.Second
	first := h.run(cfg)
	s := newStory("0")
	h.publish(s.requested)
	h.converge(map[string]store.Record{s.id: s.want(store.StageRequested)})

	lock := h.lockReadModel()
	waiting := func(want int) func() (bool, string) { return lock.waiting("stk_pushes", want) }
	h.publish(s.completed)
	h.eventually("the first completion's batch waits for the lock", waiting(1))
	want := map[string]store.Record{}
	for range 4 { // three more batches under way, and one waiting for a slot
		o := newStory("0")
		h.publish(o.requested)
		want[o.id] = o.want(store.StageRequested)
	}
	h.eventually("every slot taken", waiting(4))
	h.publishOtherCompletion(s)
	h.eventually("everything delivered to the projector", func() (bool, string) {
		info, err := h.consumerInfo()
		if err != nil {
			return false, err.Error()
		}
		return info.NumAckPending == 6, fmt.Sprintf("%d ack pending", info.NumAckPending)
	})

	stopped := make(chan struct{})
	go func() { first(); close(stopped) }()
	h.eventually("a batch handed back", func() (bool, string) {
		return strings.Contains(h.logs.String(), "stopping with events not applied; handing them back"), "not yet"
	})
	lock.release()
	<-stopped

	h.run(h.config())
	want[s.id] = s.want(store.StageCompleted)
	h.converge(want)
	h.settled()
}

// publishOtherCompletion stores a second completion of s's payment with
// another outcome (a query's answer, cancelled), raw, past the
// deduplication that would drop it as the same event.
func (h *harness) publishOtherCompletion(s story) {
	h.t.Helper()
	second := s.completed
	second.ResultCode, second.ResultDesc, second.Source = "1032", "cancelled", events.SourceQuery
	second.Receipt, second.TransactionDate = "", ""
	subject, _, body, err := events.Encode("stkgate/test", second, time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	h.publishRaw(subject, body)
}
