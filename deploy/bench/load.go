package main

// The load generator: a closed loop at fixed concurrency for throughput,
// an open loop at a fixed rate for latency, and their figures.

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// request is one request of a loop: it returns whether it succeeded. i
// counts from 0 over the loop; ok false with more false ends a closed
// loop's worker (its pool of work is empty).
type request func(ctx context.Context, i int) (ok, more bool)

// figures are one loop's results.
type figures struct {
	ok, failed int
	took       time.Duration
	lat        []time.Duration // of the requests that succeeded
	cpu        float64         // CPU seconds the serving process spent; 0: not measured
}

// cpuEach is the serving process's CPU time per request, in microseconds.
func (f figures) cpuEach() float64 {
	if f.ok == 0 {
		return 0
	}
	return 1e6 * f.cpu / float64(f.ok)
}

func (f figures) perSecond() float64 {
	if f.took <= 0 {
		return 0
	}
	return float64(f.ok) / f.took.Seconds()
}

// quantile is the q-quantile of the latencies, in milliseconds.
func (f figures) quantile(q float64) float64 {
	if len(f.lat) == 0 {
		return 0
	}
	s := slices.Clone(f.lat)
	slices.Sort(s)
	return ms(s[min(len(s)-1, int(q*float64(len(s))))])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// closedLoop runs do from conc workers, each sending its next request once
// its last is answered, for d. A request in flight when d is up is waited
// for and counted, and the loop's time runs until its answer (cut off, it
// would be work done and not counted), and each worker sends one request
// at least: on a loaded machine a short round could otherwise count
// nothing, as the smoke run's 400 ms callback round did in a CI run at
// load average 14. ctx ends requests in flight.
func closedLoop(ctx context.Context, conc int, d time.Duration, do request) figures {
	stop := time.Now().Add(d)
	over := func() bool { return !time.Now().Before(stop) }
	var next atomic.Int64
	var mu sync.Mutex
	var f figures
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			var lat []time.Duration
			failed := 0
			// Each worker sends one request at least, should it start
			// after d is up.
			for ctx.Err() == nil {
				t0 := time.Now()
				ok, more := do(ctx, int(next.Add(1)-1))
				if ok {
					lat = append(lat, time.Since(t0))
				} else if ctx.Err() == nil {
					failed++
				}
				if !more || over() {
					break
				}
			}
			mu.Lock()
			f.lat = append(f.lat, lat...)
			f.failed += failed
			mu.Unlock()
		})
	}
	wg.Wait()
	f.took, f.ok = time.Since(start), len(f.lat)
	return f
}

// openLoop starts request i at i/rate seconds, whether or not the earlier
// ones were answered, for d; it returns once every request was answered.
func openLoop(ctx context.Context, rate float64, d time.Duration, do request) figures {
	var mu sync.Mutex
	var f figures
	var wg sync.WaitGroup
	start := time.Now()
	n := int(rate * d.Seconds())
	for i := range n {
		at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if wait := time.Until(at); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			t0 := time.Now()
			ok, _ := do(ctx, i)
			lat := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				f.lat = append(f.lat, lat)
			} else {
				f.failed++
			}
		})
	}
	wg.Wait()
	f.took, f.ok = time.Since(start), len(f.lat)
	return f
}
