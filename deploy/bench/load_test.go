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
	// Every request is answered after the round's time is up.
	end := time.Now().Add(10 * round)
	f := closedLoop(context.Background(), conc, round, func(ctx context.Context, _ int) (bool, bool) {
		select {
		case <-time.After(time.Until(end)):
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

// A closed loop still ends when its caller's context does, in flight or
// not.
func TestClosedLoopEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f := closedLoop(ctx, 2, time.Hour, func(ctx context.Context, _ int) (bool, bool) {
		<-ctx.Done()
		return false, true
	})
	if f.ok != 0 {
		t.Fatalf("ok %d, want 0", f.ok)
	}
}
