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
// each of them is pushed behind a bounded number of A's pushes more than
// B's own (a few seconds at the budget's pace), far inside
// RECONCILE_REQUEST_DEADLINE, so none can be failed as not_dispatched. The
// figures (max and p99 of B's time to push, the most of A's pushes ahead)
// are logged.
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
		// aheadBound is how many more of A's pushes than of B's own may
		// go ahead of one of B's: the design's is DISPATCH_CONCURRENCY
		// (8) plus a fetch, doubled for a shared machine; starved, B's
		// would wait behind A's whole backlog (hundreds). It is counted
		// in pushes, not seconds, so that a loaded machine, which slows
		// every push, does not fail it. B's own pushes are taken off:
		// on a loaded machine B's requests outrun its share of the
		// workers (8 over its, A's and a newcomer's: 2), wait for each
		// other, handed back for B's own share and in no set order,
		// while A's go at the same pace on its share; that is the
		// shares at work, not A holding B back. On a fresh CI machine so
		// loaded that A's flood reached 12 requests a second (of 50) and
		// pushes 1.4 a second, 21 went ahead of one of B's: B's requests
		// handed back wait out their delay, and the workers free meanwhile
		// take A's (the shares give way to work waiting). Starved, B's
		// would still wait behind A's whole backlog: at that pace, 88.
		aheadBound = 32
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
	occasional := map[string]bool{} // B's phones
	tick := time.NewTicker(bEvery)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			continue
		case <-tick.C:
		}
		p := newPayment()
		p.Client = "occasional"
		occasional[p.Phone] = true
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

	// ahead is how many more of A's pushes than of B's were made after
	// from and before to.
	ahead := func(from, to time.Time) int {
		pushes := h.fake.Pushes()
		return pushesBetween(pushes, flood, &floodMu, from, to) - pushesBetween(pushes, occasional, nil, from, to)
	}

	// Wait for B's pushes. Starved, one of B's would wait while more than
	// aheadBound more of A's than of B's are pushed after it (once B's
	// others are pushed, A's alone); so the wait ends there, or
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
				starved = starved || ahead(b.at, time.Now()) > aheadBound
			}
		}
		if all || starved {
			break
		}
		time.Sleep(20 * time.Millisecond) // a poll of the fake's pushes
	}

	var (
		waits     []time.Duration
		mostAhead int
	)
	for i, b := range bs {
		at, ok := pushedAt(b.p)
		if !ok {
			t.Errorf("B's request %d (tracking_id %s, sent at +%v) not pushed %v after it, %d more of A's pushes than of B's meanwhile: starved",
				i, b.p.TrackingID, b.at.Sub(bs[0].at).Round(time.Millisecond), time.Since(b.at).Round(time.Millisecond), ahead(b.at, time.Now()))
			continue
		}
		w := at.Sub(b.at)
		waits = append(waits, w)
		n := ahead(b.at, at)
		mostAhead = max(mostAhead, n)
		if n > aheadBound {
			t.Errorf("B's request %d (tracking_id %s) pushed %v after it was requested, behind %d more of A's pushes than of B's, want at most %d",
				i, b.p.TrackingID, w.Round(time.Millisecond), n, aheadBound)
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
		t.Logf("B's time to push: max %v, p99 %v, median %v; at most %d more of A's pushes than of B's ahead of one (bound %d)",
			waits[len(waits)-1].Round(time.Millisecond), p99.Round(time.Millisecond),
			waits[len(waits)/2].Round(time.Millisecond), mostAhead, aheadBound)
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

// pushesBetween counts the pushes to phones (read with mu held, unless
// nil) made after from and before to.
func pushesBetween(pushes []darajatest.Push, phones map[string]bool, mu *sync.Mutex, from, to time.Time) int {
	if mu != nil {
		mu.Lock()
		defer mu.Unlock()
	}
	n := 0
	for _, p := range pushes {
		if phones[p.Body.PhoneNumber] && p.At.After(from) && p.At.Before(to) {
			n++
		}
	}
	return n
}
