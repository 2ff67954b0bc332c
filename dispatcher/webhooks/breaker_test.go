package webhooks

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stkgate/stkgate/events/kit/webhook"
)

func TestEndpointsLimitAndBreaker(t *testing.T) {
	e := newEndpoints(2, 100, 3, time.Second, 4*time.Second, 10*time.Second)
	now := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _, _ := e.acquire("a", "c", now); !ok {
			t.Fatalf("attempt %d to a refused", i+1)
		}
	}
	if ok, busy, _ := e.acquire("a", "c", now); ok || !busy {
		t.Fatalf("third attempt in flight to a: ok %v busy %v, want busy", ok, busy)
	}
	if ok, _, _ := e.acquire("b", "c", now); !ok {
		t.Fatal("b waits for a")
	}
	e.release("b", "c", true, now)
	e.release("a", "c", false, now)
	e.release("a", "c", false, now)
	if ok, _, _ := e.acquire("a", "c", now); !ok {
		t.Fatal("a refused after two failures (the breaker opens at three)")
	}
	e.release("a", "c", false, now)
	ok, busy, wait := e.acquire("a", "c", now)
	if ok || busy || wait != time.Second {
		t.Fatalf("after 3 failures: ok %v busy %v wait %s, want the breaker open for 1s", ok, busy, wait)
	}
	now = now.Add(time.Second)
	if ok, _, _ := e.acquire("a", "c", now); !ok {
		t.Fatal("no trial after the cooldown")
	}
	if ok, _, _ := e.acquire("a", "c", now); ok {
		t.Fatal("a second attempt during the trial")
	}
	e.release("a", "c", false, now)
	if _, _, wait := e.acquire("a", "c", now); wait != 2*time.Second {
		t.Fatalf("a failed trial opens the breaker for %s, want the doubled 2s", wait)
	}
	now = now.Add(2 * time.Second)
	if ok, _, _ := e.acquire("a", "c", now); !ok {
		t.Fatal("no trial after the second cooldown")
	}
	e.release("a", "c", true, now)
	if ok, _, _ := e.acquire("a", "c", now); !ok {
		t.Fatal("a successful trial did not close the breaker")
	}
}

// TestEndpointsCancel: an attempt given up before it was made (its
// delivery already done, its endpoint removed) frees its slot and counts
// neither way; a cancelled trial lets the next task try at once.
func TestEndpointsCancel(t *testing.T) {
	e := newEndpoints(1, 100, 1, time.Minute, time.Hour, 10*time.Second)
	now := time.Unix(1000, 0)
	if ok, _, _ := e.acquire("a", "c", now); !ok {
		t.Fatal("refused")
	}
	e.cancel("a", "c")
	if ok, _, _ := e.acquire("a", "c", now); !ok {
		t.Fatal("a cancelled attempt kept its slot")
	}
	e.release("a", "c", false, now) // the breaker opens (1 failure)
	now = now.Add(time.Minute)
	if ok, _, _ := e.acquire("a", "c", now); !ok {
		t.Fatal("no trial after the cooldown")
	}
	e.cancel("a", "c")
	if ok, _, _ := e.acquire("a", "c", now); !ok {
		t.Fatal("a cancelled trial holds the breaker for its trial time")
	}
}

// TestEndpointsCooldownDoublesPerOpening: the attempts in flight when an
// endpoint goes down all fail together; the breaker opens once, and its
// cooldown doubles once per failed trial, as documented (30 s, 1, 2, 4 …
// minutes), not once per failure.
func TestEndpointsCooldownDoublesPerOpening(t *testing.T) {
	e := newEndpoints(4, 100, 1, time.Second, time.Minute, 10*time.Second)
	now := time.Unix(1000, 0)
	for i := range 4 {
		if ok, _, _ := e.acquire("a", "c", now); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	for range 4 {
		e.release("a", "c", false, now)
	}
	_, _, open := e.acquire("a", "c", now)
	if open != time.Second {
		t.Fatalf("breaker open for %s after 4 failures together, want 1s", open)
	}
	// Each trial as its tasks come back, when the breaker's cooldown ends
	// (an endpoint idle for twice the longest cooldown is forgotten).
	for i, want := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second} {
		now = now.Add(open)
		if ok, _, _ := e.acquire("a", "c", now); !ok {
			t.Fatalf("trial %d refused", i+1)
		}
		e.release("a", "c", false, now)
		if _, _, open = e.acquire("a", "c", now); open != want {
			t.Fatalf("after failed trial %d: open for %s, want %s", i+1, open, want)
		}
	}
}

// TestEndpointsPerClientLimit: a client's endpoints together hold at most
// perClient attempts; another client is not held back.
func TestEndpointsPerClientLimit(t *testing.T) {
	e := newEndpoints(2, 3, 5, time.Second, time.Minute, 10*time.Second)
	now := time.Unix(1000, 0)
	for i, id := range []string{"a1", "a1", "a2"} {
		if ok, _, _ := e.acquire(id, "shop", now); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	if ok, busy, _ := e.acquire("a3", "shop", now); ok || !busy {
		t.Fatalf("a 4th attempt of one client: ok %v busy %v, want busy at its limit of 3", ok, busy)
	}
	if ok, _, _ := e.acquire("b1", "other", now); !ok {
		t.Fatal("another client held back")
	}
	e.release("a1", "shop", true, now)
	if ok, _, _ := e.acquire("a3", "shop", now); !ok {
		t.Fatal("a released slot not given to the client's next attempt")
	}
}

func TestSucceeded(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  webhook.Result
		want bool
	}{
		{"2xx fast", webhook.Result{Status: 200, Latency: time.Second}, true},
		{"2xx slow", webhook.Result{Status: 204, Latency: 6 * time.Second}, false},
		{"5xx fast", webhook.Result{Status: 503, Latency: time.Millisecond}, false},
		{"no answer", webhook.Result{Err: errors.New("timeout")}, false},
	} {
		if got := succeeded(tc.res, 5*time.Second); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestEndpointsForgetIdleFailures: a callback_url is a slot of its own, and
// a client that opted in may give every payment another URL. The state of
// one that failed and is never tried again (its delivery given up, its
// payment done) must not be kept for the life of the worker: a client's
// unreachable URLs, one a payment, would grow the worker's memory without
// bound.
func TestEndpointsForgetIdleFailures(t *testing.T) {
	e := newEndpoints(2, 100, 3, time.Second, time.Minute, 10*time.Second)
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		id := fmt.Sprintf("ep-callback https://down.example/order/%d", i)
		if ok, _, _ := e.acquire(id, "shop", now); !ok {
			t.Fatalf("acquire %s refused", id)
		}
		e.release(id, "shop", false, now)
	}
	later := now.Add(time.Hour)
	if ok, _, _ := e.acquire("ep-other", "other", later); !ok {
		t.Fatal("acquire ep-other refused")
	}
	e.release("ep-other", "other", true, later)
	e.mu.Lock()
	n := len(e.m)
	e.mu.Unlock()
	if n > 10 {
		t.Errorf("%d endpoint states kept an hour after their one failed attempt, want them forgotten", n)
	}
	// One still failing and tried within its cooldown is remembered.
	id := "ep-live"
	at := later
	for range 3 {
		if ok, _, _ := e.acquire(id, "shop", at); !ok {
			t.Fatal("acquire ep-live refused")
		}
		e.release(id, "shop", false, at)
	}
	if ok, _, _ := e.acquire(id, "shop", at.Add(500*time.Millisecond)); ok {
		t.Error("a breaker just opened let an attempt through")
	}
}
