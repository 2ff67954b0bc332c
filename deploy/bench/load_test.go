package main

import (
	"context"
	"testing"
	"time"
)

// A request still in flight when the round's time is up is waited for and
// counted: on a machine loaded enough that no request of a round is
// answered within it (the smoke run's 400 ms callback round in a loaded CI
// run), the round has figures all the same, where it had none.
func TestClosedLoopCountsTheRequestsInFlightAtTheEnd(t *testing.T) {
	const conc, round = 3, time.Millisecond
	// Every request is answered after the round's time is up: each takes
	// ten rounds from its own start.
	f := closedLoop(context.Background(), conc, round, func(ctx context.Context, _ int) (bool, bool) {
		select {
		case <-time.After(10 * round):
			return true, true
		case <-ctx.Done():
			return false, true
		}
	})
	if f.ok != conc || f.failed != 0 || len(f.lat) != conc {
		t.Fatalf("ok %d, failed %d, %d latencies; want %d answered, none failed", f.ok, f.failed, len(f.lat), conc)
	}
	if f.perSecond() <= 0 {
		t.Errorf("per second %v", f.perSecond())
	}
}

// A closed loop ends when its caller's context does, with requests in
// flight: they are handed that context, and neither count nor fail.
func TestClosedLoopEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const conc = 2
	started := make(chan struct{}, conc)
	done := make(chan figures, 1)
	go func() {
		done <- closedLoop(ctx, conc, time.Hour, func(ctx context.Context, _ int) (bool, bool) {
			started <- struct{}{}
			<-ctx.Done()
			return false, true
		})
	}()
	for range conc {
		<-started
	}
	cancel()
	select {
	case f := <-done:
		if f.ok != 0 || f.failed != 0 {
			t.Fatalf("ok %d, failed %d; want neither", f.ok, f.failed)
		}
	case <-time.After(time.Minute):
		t.Fatal("the loop did not end a minute after its context")
	}
}
