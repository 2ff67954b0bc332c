package webhooks

import (
	"sync"
	"time"
)

// endpoints keeps, per endpoint and in this process, how many deliveries
// are in flight (at most perEndpoint, and at most perClient to all of one
// client's endpoints together: a client may have several endpoints, each
// slow) and a circuit breaker: after
// failures consecutive failed attempts the endpoint is left alone for a
// cooldown (doubling up to maxCooldown while it keeps failing), then one
// trial attempt goes through; its success closes the breaker. A task that
// finds its endpoint busy or its breaker open is handed back to JetStream
// with a delay, without an attempt: one slow or failing merchant holds at
// most perClient of the worker's handlers, and none for long.
type endpoints struct {
	perEndpoint int
	perClient   int
	failures    int
	cooldown    time.Duration
	maxCooldown time.Duration
	trialFor    time.Duration

	mu      sync.Mutex
	m       map[string]*endpointState
	clients map[string]int // attempts in flight per client
	swept   time.Time      // when forget last ran
}

type endpointState struct {
	inFlight  int
	failed    int           // consecutive failures
	openUntil time.Time     // breaker open (or a trial running) until then
	cooldown  time.Duration // the next cooldown
	trial     bool          // a half-open trial is running
	failedAt  time.Time     // the last failure
}

func newEndpoints(perEndpoint, perClient, failures int, cooldown, maxCooldown, trialFor time.Duration) *endpoints {
	return &endpoints{
		perEndpoint: perEndpoint, perClient: perClient, failures: failures, cooldown: cooldown, maxCooldown: maxCooldown,
		trialFor: trialFor, m: map[string]*endpointState{}, clients: map[string]int{},
	}
}

// acquire takes a slot for an attempt to id, an endpoint of client, or
// says how long to wait (busy: its or its client's in-flight limit;
// otherwise its breaker is open).
func (e *endpoints) acquire(id, client string, now time.Time) (ok, busy bool, wait time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.forget(now)
	s := e.m[id]
	if s == nil {
		s = &endpointState{cooldown: e.cooldown}
		e.m[id] = s
	}
	if now.Before(s.openUntil) {
		return false, false, s.openUntil.Sub(now)
	}
	if s.inFlight >= e.perEndpoint || e.clients[client] >= e.perClient {
		if s.inFlight == 0 && s.failed == 0 {
			delete(e.m, id)
		}
		return false, true, 0
	}
	if s.failed >= e.failures {
		// Half open: this attempt is the trial; the others wait for it.
		s.openUntil, s.trial = now.Add(e.trialFor), true
	}
	s.inFlight++
	e.clients[client]++
	return true, false, 0
}

// cancel gives back a slot taken for an attempt that was not made: it
// counts neither way, and a trial it held is open to the next task.
func (e *endpoints) cancel(id, client string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.releaseClient(client)
	s := e.m[id]
	s.inFlight--
	if s.failed >= e.failures {
		s.openUntil, s.trial = time.Time{}, false
	}
	if s.inFlight == 0 && s.failed == 0 {
		delete(e.m, id)
	}
}

// release ends an attempt to id, and records whether it succeeded.
func (e *endpoints) release(id, client string, success bool, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.releaseClient(client)
	s := e.m[id]
	s.inFlight--
	if success {
		s.failed, s.openUntil, s.cooldown, s.trial = 0, time.Time{}, e.cooldown, false
	} else {
		s.failed++
		s.failedAt = now
		// The breaker opens, and its next cooldown doubles, once per
		// opening: the other attempts in flight when the endpoint went
		// down fail too, and neither lengthen nor double it.
		if s.failed >= e.failures && (s.trial || !now.Before(s.openUntil)) {
			s.openUntil, s.trial = now.Add(s.cooldown), false
			s.cooldown = min(2*s.cooldown, e.maxCooldown)
		}
	}
	if s.inFlight == 0 && s.failed == 0 {
		delete(e.m, id)
	}
}

// forget drops, at most once per maxCooldown, the states of endpoints with
// nothing in flight, no breaker open and no failure for twice maxCooldown:
// an endpoint still failing is tried again within its cooldown, so what is
// dropped is one no task asks for any more (most often a payment's
// callback_url, a slot of its own, whose delivery is over). Without it every
// callback_url that ever failed would be kept for the worker's life.
func (e *endpoints) forget(now time.Time) {
	if now.Sub(e.swept) < e.maxCooldown {
		return
	}
	e.swept = now
	for id, s := range e.m {
		if s.inFlight == 0 && !now.Before(s.openUntil) && now.Sub(s.failedAt) >= 2*e.maxCooldown {
			delete(e.m, id)
		}
	}
}

func (e *endpoints) releaseClient(client string) {
	if e.clients[client]--; e.clients[client] <= 0 {
		delete(e.clients, client)
	}
}
