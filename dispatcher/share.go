package dispatcher

import (
	"sync"
	"time"
)

// shares keeps one client from taking every worker, and so Daraja's whole
// budget (DARAJA_MAX_RPS). JetStream delivers stk.requested in the order
// the requests were accepted, so a client sending faster than the budget
// builds a backlog that every other client's request would wait behind.
// Instead, a client may have at most its share of the workers on its
// requests at once; a request of a client at its share is handed back to
// JetStream with a delay (before anything of it is read or written), and
// the workers pull on past it to the other clients' requests.
//
// A client's share is the workers divided by the clients at work plus one,
// at most ClientMaxInFlight, at least one: a client alone gets half of
// them, and a newcomer always finds some free. The rate limiter hands
// Daraja's slots out in the order they are asked for, so a request taken
// waits for at most the pushes in flight (at most Concurrency) at Daraja's
// pace.
//
// The requests handed back stay pending in JetStream (they count against
// the consumer's MaxAckPending), and nats-server redelivers a nak'ed message
// before any new one. So a client's handed-back requests are spread out:
// each is due back one spacing after the client's previous one (at twice
// the budget's pace), not all at once, so that redeliveries never crowd out
// the new requests behind them.
//
// The counts are per dispatcher process.
type shares struct {
	workers int           // Concurrency
	most    int           // ClientMaxInFlight
	wait    time.Duration // the shortest hand-back
	spacing time.Duration // between one client's hand-backs coming due

	mu       sync.Mutex
	inFlight map[string]int       // clients with requests being worked on
	next     map[string]time.Time // when a client's next hand-back is due
	swept    time.Time
}

func newShares(workers, most int, wait, spacing time.Duration) *shares {
	return &shares{
		workers:  workers,
		most:     most,
		wait:     wait,
		spacing:  spacing,
		inFlight: map[string]int{},
		next:     map[string]time.Time{},
	}
}

// take counts a request of client in, if the client is below its share (or
// force is set), and returns the function that counts it out. Otherwise
// it returns nil and how long the request should wait in JetStream.
func (s *shares) take(client string, now time.Time, force bool) (done func(), wait time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.inFlight[client]; force || n < s.shareLocked() {
		s.inFlight[client] = n + 1
		var once sync.Once
		return func() { once.Do(func() { s.put(client) }) }, 0
	}
	due := now.Add(s.wait)
	if next := s.next[client]; next.After(due) {
		due = next
	}
	s.next[client] = due.Add(s.spacing)
	s.sweepLocked(now)
	return nil, due.Sub(now)
}

// shareLocked is how many requests one client may have in flight now.
func (s *shares) shareLocked() int {
	return max(1, min(s.most, s.workers/(len(s.inFlight)+1)))
}

func (s *shares) put(client string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inFlight[client] <= 1 {
		delete(s.inFlight, client)
		return
	}
	s.inFlight[client]--
}

// sweepLocked forgets, once a minute, the clients whose hand-backs are all
// due: their next one starts afresh.
func (s *shares) sweepLocked(now time.Time) {
	if now.Sub(s.swept) < time.Minute {
		return
	}
	s.swept = now
	for c, t := range s.next {
		if t.Before(now) {
			delete(s.next, c)
		}
	}
}

// handBackSpacing is the time between one client's hand-backs coming due:
// twice Daraja's pace (maxRPS, 0 for none), so that a client at its share
// always has a request back when a worker frees, and its redeliveries stay
// a trickle however large its backlog.
func handBackSpacing(maxRPS float64) time.Duration {
	if maxRPS <= 0 {
		return 10 * time.Millisecond
	}
	return time.Duration(float64(time.Second) / (2 * maxRPS))
}
