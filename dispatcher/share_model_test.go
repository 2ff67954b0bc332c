package dispatcher

import (
	"container/heap"
	"fmt"
	"testing"
	"time"
)

// A model of the dispatcher's workers and JetStream's redeliveries around
// shares, on a clock of its own: each request is delivered when it
// arrives and again when its hand-back is due, is forced past its share
// at half its deliveries (500, as handle does), and holds its worker for
// a service time. It models the shares alone, not nats-server's order of
// delivery among messages due at once (arrival order here). The review
// of the hand-backs' pace without a budget built it.

// modelRequest is one request in the model, and what became of it.
type modelRequest struct {
	client    string
	arrive    time.Time
	delivered int
	forced    bool      // taken past its share at half its deliveries
	took      time.Time // when a worker took it
}

type modelEvent struct {
	at    time.Time
	done  func() // a worker freed; nil: request i delivered
	i     int
	order int // among events at one time, the order they were made
}

type modelQueue []*modelEvent

func (q modelQueue) Len() int { return len(q) }
func (q modelQueue) Less(a, b int) bool {
	if !q[a].at.Equal(q[b].at) {
		return q[a].at.Before(q[b].at)
	}
	return q[a].order < q[b].order
}
func (q modelQueue) Swap(a, b int) { q[a], q[b] = q[b], q[a] }
func (q *modelQueue) Push(x any)   { *q = append(*q, x.(*modelEvent)) }
func (q *modelQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// runModel runs reqs through s until every one is done or until; service
// is how long a request of client taken at a time holds its worker. It
// returns when the last was done and how many hand-backs there were.
func runModel(s *shares, reqs []*modelRequest, service func(client string, at time.Time) time.Duration, until time.Time) (end time.Time, handBacks int) {
	var now time.Time
	s.now = func() time.Time { return now }
	q := &modelQueue{}
	order := 0
	event := func(e *modelEvent) {
		order++
		e.order = order
		heap.Push(q, e)
	}
	for i, r := range reqs {
		event(&modelEvent{at: r.arrive, i: i})
	}
	for q.Len() > 0 {
		e := heap.Pop(q).(*modelEvent)
		if e.at.After(until) {
			break
		}
		now = e.at
		if e.done != nil {
			e.done()
			end = now
			continue
		}
		r := reqs[e.i]
		r.delivered++
		force := r.delivered >= 500
		done, wait, _ := s.take(ask{client: r.client, phone: fmt.Sprint("p", e.i), id: fmt.Sprint("r", e.i), seq: uint64(e.i + 1)}, now, force)
		if done == nil {
			handBacks++
			event(&modelEvent{at: now.Add(wait), i: e.i})
			continue
		}
		r.forced, r.took = force, now
		event(&modelEvent{at: now.Add(service(r.client, now)), done: done})
	}
	return end, handBacks
}

var modelT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// every is n requests of client, one each gap from start.
func every(client string, n int, start time.Time, gap time.Duration) []*modelRequest {
	var reqs []*modelRequest
	for i := range n {
		reqs = append(reqs, &modelRequest{client: client, arrive: start.Add(time.Duration(i) * gap)})
	}
	return reqs
}

// Without a budget, one client sending twice what 32 workers can do (a
// request holds one 16 ms: 2,000 a second, its share half of them) for
// 5 s is done about when the workers could have done it: with the fixed
// trickle of 100 hand-backs a second it took 56 s, the workers idle most
// of it.
func TestModelHandBacksKeepTheWorkersBusyWithoutABudget(t *testing.T) {
	s := newShares(32, 32, DefaultClientWait, handBackSpacing(0))
	reqs := every("a", 10000, modelT0, 500*time.Microsecond)
	end, handBacks := runModel(s, reqs, func(string, time.Time) time.Duration { return 16 * time.Millisecond }, modelT0.Add(time.Hour))
	most := 0
	for _, r := range reqs {
		most = max(most, r.delivered)
		if r.took.IsZero() || r.forced {
			t.Fatalf("a request not taken, or taken only past its share: %+v", r)
		}
	}
	// 10,000 at 1,000 a second (its share, 16 workers): 10 s.
	if took := end.Sub(modelT0); took > 12*time.Second {
		t.Errorf("done after %v, want about 10 s", took)
	}
	t.Logf("done after %v, %d hand-backs, at most %d deliveries of one request", end.Sub(modelT0), handBacks, most)
}

// Without a budget, a fast client's backlog does not hold back another
// client's requests: each is taken as it arrives, the newcomer's share
// free for it.
func TestModelOneClientCannotStarveAnotherWithoutABudget(t *testing.T) {
	s := newShares(32, 32, DefaultClientWait, handBackSpacing(0))
	reqs := append(every("a", 20000, modelT0, 500*time.Microsecond), every("b", 20, modelT0.Add(time.Second), 500*time.Millisecond)...)
	runModel(s, reqs, func(string, time.Time) time.Duration { return 16 * time.Millisecond }, modelT0.Add(time.Hour))
	var worst time.Duration
	for _, r := range reqs {
		if r.client == "b" {
			if r.took.IsZero() {
				t.Fatalf("b's request of %v never taken", r.arrive)
			}
			worst = max(worst, r.took.Sub(r.arrive))
		}
	}
	if worst > DefaultClientWait {
		t.Errorf("b's requests waited up to %v behind a's backlog, want at most one hand-back (%v)", worst, DefaultClientWait)
	}
}

// Without a budget, a fast client whose requests stop being done (Daraja
// stalled, every push retrying) with 2,000 handed back: its hand-backs
// slow with the stall, so that none reaches half its deliveries and is
// forced past the share, and JetStream sees a trickle. With the last fast
// pace kept, they went round every 250 ms: 500 deliveries each in two
// minutes, all forced at once when Daraja came back.
func TestModelAStalledClientGoesBackToTheTrickle(t *testing.T) {
	s := newShares(32, 32, DefaultClientWait, handBackSpacing(0))
	stall := modelT0.Add(time.Second)
	// 5,000 a second for a second (its pace known), then 2,000 at once.
	reqs := append(every("a", 5000, modelT0, 200*time.Microsecond), every("a", 2000, stall, time.Microsecond)...)
	service := func(_ string, at time.Time) time.Duration {
		if at.Before(stall.Add(-5 * time.Millisecond)) {
			return time.Millisecond
		}
		return 130 * time.Second
	}
	_, handBacks := runModel(s, reqs, service, stall.Add(127*time.Second))
	most, forced := 0, 0
	for _, r := range reqs {
		most = max(most, r.delivered)
		if r.forced {
			forced++
		}
	}
	if forced > 0 || most > 50 || handBacks > 300*127 {
		t.Errorf("over a 127 s stall: %d forced past the share, one request delivered up to %d times, %d hand-backs (%.0f a second)",
			forced, most, handBacks, float64(handBacks)/127)
	}
}
