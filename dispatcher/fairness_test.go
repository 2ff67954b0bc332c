package dispatcher

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// One client sending at many times Daraja's budget (DARAJA_MAX_RPS) for
// the whole test does not hold back another client's occasional payments:
// each of them is pushed behind a bounded number of A's pushes (a few
// seconds at the budget's pace), far inside RECONCILE_REQUEST_DEADLINE, so
// none can be failed as not_dispatched. The figures (max and p99 of B's
// time to push) are logged.
//
// The "minutes at the full rate" is scaled down: a budget of 5
// calls a second and a flood of 50 a second for 10 s leave a backlog of
// about 450 of A's requests, which before the fix B's requests waited behind
// (about 90 s for the last one).
//
// The shares hold only while the requests waiting fit the dispatcher
// consumer's MaxAckPending: with it at 100, A's unbounded backlog fills it
// and nats-server delivers none of B's (13 of 20 never pushed). The api caps
// each client's requests queued for the dispatcher (API_CLIENT_MAX_QUEUED);
// the second case is A held to 40 queued, as the api would hold it (a
// request over it is refused, not published), with MaxAckPending 100 at
// least two clients at their caps plus room.
func TestOneClientCannotStarveAnother(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		maxAckPending int // 0: the consumer's own (10000)
		aMaxQueued    int // 0: A's backlog unbounded
	}{
		{"A's backlog unbounded", 0, 0},
		{"A capped at 40 queued, MaxAckPending 100", 100, 40},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testStarvation(t, tc.maxAckPending, tc.aMaxQueued)
		})
	}
}

func testStarvation(t *testing.T, maxAckPending, aMaxQueued int) {
	const (
		budget   = 5.0 // DARAJA_MAX_RPS
		floodRPS = 50  // client A: ten times the budget
		load     = 10 * time.Second
		bEvery   = 500 * time.Millisecond // client B
		// aheadBound is how many of A's pushes may go ahead of one of
		// B's: the design's is DISPATCH_CONCURRENCY (8) plus a fetch,
		// doubled for a shared machine; starved, B's would wait behind
		// A's whole backlog (hundreds). It is counted in pushes, not
		// seconds, so that a loaded machine, which slows every push,
		// does not fail it.
		aheadBound = 20
		// settle is how long the wait for B's last requests goes on with
		// nothing pushed at all: far beyond a fair wait (aheadBound at the
		// budget's pace, 4 s).
		settle = 30 * time.Second
	)
	h := newHarness(t, func(c *Config) {
		c.Concurrency = 8
		c.Daraja.MaxRPS = budget
		if maxAckPending > 0 {
			c.tuneConsumer = func(cc *jetstream.ConsumerConfig) { cc.MaxAckPending = maxAckPending }
		}
	})
	h.start()

	ctx, cancel := context.WithTimeout(context.Background(), load)
	defer cancel()
	pub := events.Publisher{JS: h.ns.JS, Source: "stkgate/api"}
	publish := func(p events.Payment) error {
		pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := pub.Publish(pctx, events.Requested{Payment: p})
		return err
	}

	var (
		wg      sync.WaitGroup
		floodMu sync.Mutex
		floodN  int
		flood   = map[string]bool{} // A's phones
		floodEr error
		refused int // A's requests over aMaxQueued: the api's 429
		peak    int // the most of A's requests queued at once
	)
	// queuedA is how many of A's requests are published and not pushed,
	// with floodMu held.
	queuedA := func() int {
		pushed := 0
		for _, p := range h.fake.Pushes() {
			if flood[p.Body.PhoneNumber] {
				pushed++
			}
		}
		return floodN - pushed
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / floodRPS)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if aMaxQueued > 0 {
				floodMu.Lock()
				n := queuedA()
				if n >= aMaxQueued {
					refused++
				}
				peak = max(peak, n)
				floodMu.Unlock()
				if n >= aMaxQueued {
					continue
				}
			}
			p := newPayment()
			p.Client = "flooder"
			if err := publish(p); err != nil {
				floodMu.Lock()
				floodEr = err
				floodMu.Unlock()
				return
			}
			floodMu.Lock()
			floodN++
			flood[p.Phone] = true
			floodMu.Unlock()
		}
	}()

	type sent struct {
		p  events.Payment
		at time.Time
	}
	var bs []sent
	tick := time.NewTicker(bEvery)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			continue
		case <-tick.C:
		}
		p := newPayment()
		p.Client = "occasional"
		at := time.Now()
		if err := publish(p); err != nil {
			t.Fatal(err)
		}
		bs = append(bs, sent{p, at})
	}
	tick.Stop()
	wg.Wait()
	if floodEr != nil {
		t.Fatalf("client A's requests: %v", floodEr)
	}

	// Wait for B's pushes. Starved, one of B's would wait while more than
	// aheadBound of A's are pushed after it; so the wait ends there, or
	// once every one of B's is pushed, or when nothing at all has been
	// pushed for settle (a stall). Not at a fixed time: a loaded machine
	// slows every push, and B's with them.
	pushedAt := func(p events.Payment) (time.Time, bool) {
		got := h.fakePushes(p.Phone)
		if len(got) == 0 {
			return time.Time{}, false
		}
		return got[0].At, true
	}
	lastN, lastAt := -1, time.Now()
	for time.Since(lastAt) < settle {
		if n := len(h.fake.Pushes()); n != lastN {
			lastN, lastAt = n, time.Now()
		}
		all, starved := true, false
		for _, b := range bs {
			if _, ok := pushedAt(b.p); !ok {
				all = false
				starved = starved || pushesBetween(h.fake.Pushes(), flood, &floodMu, b.at, time.Now()) > aheadBound
			}
		}
		if all || starved {
			break
		}
		time.Sleep(20 * time.Millisecond) // a poll of the fake's pushes
	}

	var waits []time.Duration
	for i, b := range bs {
		at, ok := pushedAt(b.p)
		if !ok {
			t.Errorf("B's request %d (sent at +%v) not pushed %v after it: starved by A's backlog",
				i, b.at.Sub(bs[0].at).Round(time.Millisecond), time.Since(b.at).Round(time.Millisecond))
			continue
		}
		w := at.Sub(b.at)
		waits = append(waits, w)
		if ahead := pushesBetween(h.fake.Pushes(), flood, &floodMu, b.at, at); ahead > aheadBound {
			t.Errorf("B's request %d pushed %v after it was requested, behind %d of A's pushes, want at most %d",
				i, w.Round(time.Millisecond), ahead, aheadBound)
		}
	}
	floodMu.Lock()
	pushedA := 0
	for _, p := range h.fake.Pushes() {
		if flood[p.Body.PhoneNumber] {
			pushedA++
		}
	}
	t.Logf("client A: %d requests in %v (%d a second, budget %v), %d pushed, %d refused at its cap of %d queued (peak %d); MaxAckPending %d; client B: %d requests, %d pushed",
		floodN, load, floodRPS, budget, pushedA, refused, aMaxQueued, peak, maxAckPending, len(bs), len(waits))
	floodMu.Unlock()
	if len(waits) > 0 {
		slices.Sort(waits)
		p99 := waits[int(math.Ceil(0.99*float64(len(waits))))-1]
		t.Logf("B's time to push: max %v, p99 %v, median %v",
			waits[len(waits)-1].Round(time.Millisecond), p99.Round(time.Millisecond),
			waits[len(waits)/2].Round(time.Millisecond))
	}
	if t.Failed() {
		return
	}
	for _, b := range bs {
		got := h.stored(b.p.TrackingID)
		if n := len(got[events.TypeDispatched]); n != 1 {
			t.Errorf("%s: %d stk.dispatched, want 1", b.p.TrackingID, n)
		}
		if n := len(got[events.TypeCompleted]); n != 0 {
			t.Errorf("%s: %d stk.completed, want none: %s", b.p.TrackingID, n, fmt.Sprint(got[events.TypeCompleted]))
		}
	}
}

// pushesBetween counts the pushes to flood's phones (read with mu held)
// made after from and before to.
func pushesBetween(pushes []darajatest.Push, flood map[string]bool, mu *sync.Mutex, from, to time.Time) int {
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, p := range pushes {
		if flood[p.Body.PhoneNumber] && p.At.After(from) && p.At.Before(to) {
			n++
		}
	}
	return n
}
