package projector

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stkgate/stkgate/events"
)

// Random batches of a few payments, decoded and applied with random delays,
// some all malformed (decoded to nothing): no two batches that share a key
// are ever applied at once, each waits for every earlier one sharing a key
// to be settled, none is left unapplied, and a batch decoded to nothing
// holds back none after it longer than its own decoding.
func TestApplierRandomBatchesKeepKeyOrder(t *testing.T) {
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 99))
		const n = 60
		type rec struct {
			keys       map[batchKey]bool
			begin, end time.Time
		}
		var (
			mu   sync.Mutex
			recs = make([]rec, n)
			runs = make([]int, n)
		)
		a := &applier{ctx: context.Background(), slots: make(chan struct{}, inFlight), flights: map[*flight]bool{}}
		a.handle = func(_ context.Context, items []item, _ bool) []item {
			var i int
			fmt.Sscan(items[0].ev.Base().Reference, &i)
			mu.Lock()
			recs[i].begin = time.Now()
			runs[i]++
			mu.Unlock()
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
			mu.Lock()
			recs[i].end = time.Now()
			mu.Unlock()
			return nil
		}
		empty := make([]bool, n)
		for i := range n {
			var items []item
			if rng.IntN(6) == 0 {
				empty[i] = true // every message malformed
			} else {
				for range 1 + rng.IntN(3) {
					id := fmt.Sprintf("6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b%02d", rng.IntN(12))
					co := fmt.Sprintf("ws_CO_%d", rng.IntN(12))
					items = append(items, batchOf(fmt.Sprint(i), completion(id, "0", fmt.Sprintf("R%d", rng.IntN(12)), co))...)
				}
				items[0].ev = withRef(items[0].ev, fmt.Sprint(i))
				recs[i].keys = batchKeys(items)
			}
			delay := time.Duration(rng.IntN(400)) * time.Microsecond
			a.start(func() []item { time.Sleep(delay); return items })
		}
		done := make(chan struct{})
		go func() { a.wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("seed %d: batches never settled (deadlock)", seed)
		}
		for i := range n {
			if empty[i] {
				if runs[i] != 0 {
					t.Fatalf("seed %d: empty batch %d applied", seed, i)
				}
				continue
			}
			if runs[i] != 1 {
				t.Fatalf("seed %d: batch %d applied %d times", seed, i, runs[i])
			}
			for j := range i {
				if empty[j] || !(&flight{keys: recs[j].keys}).shares(recs[i].keys) {
					continue
				}
				if recs[i].begin.Before(recs[j].end) {
					t.Fatalf("seed %d: batch %d began before batch %d, which shares a key and came first, ended", seed, i, j)
				}
			}
		}
	}
}

func withRef(ev events.Event, ref string) events.Event {
	if c, ok := ev.(events.Completed); ok {
		c.Reference = ref
		return c
	}
	return ev
}

// Stopped while an earlier batch is still decoded and others wait for it
// (an outage: handle returns only at the stop, handing its batch back):
// every batch is still handed to handle, after the earlier ones sharing its
// keys, and wait returns.
func TestApplierStopWhileDecodingAndWaiting(t *testing.T) {
	const p1 = "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b01"
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu     sync.Mutex
		handed []string
	)
	a := &applier{ctx: ctx, slots: make(chan struct{}, inFlight), flights: map[*flight]bool{}}
	a.handle = func(ctx context.Context, items []item, afterHandBack bool) []item {
		<-ctx.Done()
		mu.Lock()
		handed = append(handed, fmt.Sprintf("%s:%t", items[0].ev.Base().Reference, afterHandBack))
		mu.Unlock()
		return items // handed back at the stop
	}
	decodeA := make(chan struct{})
	a.start(func() []item {
		<-decodeA
		return batchOf("A", events.Requested{Payment: events.Payment{TrackingID: p1}})
	})
	a.start(func() []item { return nil }) // every message malformed
	a.start(decoded(batchOf("B", completion(p1, "0", "RCPT1", "ws_CO_1"))))
	a.start(decoded(batchOf("C", completion(p1, "0", "RCPT1", "ws_CO_1"))))
	started := make(chan struct{})
	go func() {
		a.start(decoded(batchOf("D", completion(p1, "0", "RCPT1", "ws_CO_1")))) // waits for a slot
		close(started)
	}()
	cancel()
	close(decodeA)
	done := make(chan struct{})
	go func() { <-started; a.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("wait never returned after the stop")
	}
	// A is handed back; B, C and D, after it, are told so.
	if want := []string{"A:false", "B:true", "C:true", "D:true"}; fmt.Sprint(handed) != fmt.Sprint(want) {
		t.Errorf("handed %v, want %v in order", handed, want)
	}
}
