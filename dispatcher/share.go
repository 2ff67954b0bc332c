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
// waits for at most the calls in flight (at most Concurrency pushes and the
// reconciler's queries) at Daraja's pace.
//
// The requests handed back stay pending in JetStream (they count against
// the consumer's MaxAckPending), and nats-server redelivers a nak'ed message
// before any new one. So a client's handed-back requests are spread out:
// each is due back one spacing after the client's previous one (at twice
// the budget's pace), not all at once, so that redeliveries never crowd out
// the new requests behind them.
//
// A request handed back keeps its place on its phone (one prompt per phone,
// first come, first served): until it comes back, a later request for the
// same phone, of any client, is handed back to come after it. Otherwise a
// later request could take the phone while the earlier one waits, since a
// request handed back has not yet joined the phone's waiting list
// (STK_PHONES).
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
	phones   map[string]heldBack  // by phone: its earliest request handed back
	swept    time.Time
}

// ask is a request asking for a worker.
type ask struct {
	client, phone, id string
	seq               uint64 // stream sequence: the order of acceptance
}

// heldBack is a request handed back for its client's share.
type heldBack struct {
	id  string
	seq uint64
	due time.Time
}

// heldBackGrace is how long after it was due a request handed back still
// holds its phone: it may come back late for want of a free worker. One that
// went to another dispatcher process holds it that long for nothing.
const heldBackGrace = 30 * time.Second

// Why take handed a request back.
const (
	atShare     = "share"
	behindPhone = "phone"
)

func newShares(workers, most int, wait, spacing time.Duration) *shares {
	return &shares{
		workers:  workers,
		most:     most,
		wait:     wait,
		spacing:  spacing,
		inFlight: map[string]int{},
		next:     map[string]time.Time{},
		phones:   map[string]heldBack{},
	}
}

// take counts request r in, if its client is below its share and no
// earlier request for its phone is handed back (or force is set), and
// returns the function that counts it out. Otherwise it returns nil, how
// long r should wait in JetStream, and why (atShare or behindPhone).
func (s *shares) take(r ask, now time.Time, force bool) (done func(), wait time.Duration, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	hb, held := s.phones[r.phone]
	if held && !force && hb.id != r.id && hb.seq < r.seq && now.Before(hb.due.Add(heldBackGrace)) {
		return nil, max(hb.due.Sub(now), 0) + s.spacing, behindPhone
	}
	if n := s.inFlight[r.client]; force || n < s.shareLocked() {
		if held && hb.id == r.id {
			delete(s.phones, r.phone)
		}
		s.inFlight[r.client] = n + 1
		var once sync.Once
		return func() { once.Do(func() { s.put(r.client) }) }, 0, ""
	}
	due := now.Add(s.wait)
	if next := s.next[r.client]; next.After(due) {
		due = next
	}
	s.next[r.client] = due.Add(s.spacing)
	if !held || hb.id == r.id || r.seq < hb.seq || !now.Before(hb.due.Add(heldBackGrace)) {
		s.phones[r.phone] = heldBack{id: r.id, seq: r.seq, due: due}
	}
	return nil, due.Sub(now), atShare
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
// due (their next one starts afresh) and the phones whose held-back
// request is past its grace.
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
	for p, hb := range s.phones {
		if !now.Before(hb.due.Add(heldBackGrace)) {
			delete(s.phones, p)
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
