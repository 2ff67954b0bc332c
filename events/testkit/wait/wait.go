// Package wait is how stkgate's tests wait: on a condition, polled, with a
// deadline that only a fault reaches — never on a sleep that guesses how
// long the machine needs.
package wait

import (
	"testing"
	"time"
)

// Timeout is how long For waits. It is long because only a fault should
// reach it: a loaded CI machine (2 cores, the race detector) is slow, not
// broken.
const Timeout = 20 * time.Second

// For looks at the condition again after firstPoll, then at intervals
// doubling up to maxPoll: a condition that holds soon is seen within a few
// milliseconds, and one that takes seconds is not asked hundreds of times
// (most conditions are a query to Postgres, JetStream or a service: at a
// fixed 5 ms, a hundred tests waiting side by side on a 2-core machine
// were a load of their own).
const (
	firstPoll = 2 * time.Millisecond
	maxPoll   = 50 * time.Millisecond
)

// For polls cond until it holds, and fails the test (naming what it waited
// for) when it does not within Timeout.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	poll := firstPoll
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", Timeout, what)
		}
		time.Sleep(poll)
		poll = min(2*poll, maxPoll)
	}
}
