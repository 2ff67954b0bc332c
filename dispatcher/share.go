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
// the budget's pace, or without a budget twice the pace the client's
// requests are done), not all at once, so that redeliveries never crowd
// out the new requests behind them.
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

	now      func() time.Time // the clock requests are counted out by
	mu       sync.Mutex
	inFlight map[string]int       // clients with requests being worked on
	paces    map[string]*pace     // how fast each client's requests are done
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
		now:      time.Now,
		inFlight: map[string]int{},
		paces:    map[string]*pace{},
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
		// After the earlier one: a fixed margin (the trickle's without a
		// budget), not another client's pace.
		return nil, max(hb.due.Sub(now), 0) + s.phoneSpacing(), behindPhone
	}
	if n := s.inFlight[r.client]; force || n < s.shareLocked() {
		if held && hb.id == r.id {
			delete(s.phones, r.phone)
		}
		if p := s.paces[r.client]; p != nil && n == 0 {
			p.busy = now
		}
		s.inFlight[r.client] = n + 1
		var once sync.Once
		return func() { once.Do(func() { s.put(r.client) }) }, 0, ""
	}
	due := now.Add(s.wait)
	if next := s.next[r.client]; next.After(due) {
		due = next
	}
	s.next[r.client] = due.Add(s.spacingLocked(r.client, now))
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
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.paces[client]
	if p == nil {
		p = &pace{since: now}
		s.paces[client] = p
	}
	p.done(now)
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
	for c, p := range s.paces {
		if _, busy := s.inFlight[c]; !busy && now.Sub(p.since) > time.Minute {
			delete(s.paces, c)
		}
	}
	for p, hb := range s.phones {
		if !now.Before(hb.due.Add(heldBackGrace)) {
			delete(s.phones, p)
		}
	}
}

// handBackSpacing is the time between one client's hand-backs coming due:
// twice Daraja's pace (maxRPS), so that a client at its share always has a
// request back when a worker frees, and its redeliveries stay a trickle
// however large its backlog. Without a bound on Daraja (maxRPS 0) it is 0:
// each client's hand-backs then follow twice the pace its requests are
// done (spacingLocked).
func handBackSpacing(maxRPS float64) time.Duration {
	if maxRPS <= 0 {
		return 0
	}
	return time.Duration(float64(time.Second) / (2 * maxRPS))
}

// The spacing of a client's hand-backs when it follows the client's pace:
// at most the trickle of 100 a second (a client done slowly, or not yet
// done at all, whose hand-backs would only be handed back again), at least
// 10,000 a second (a worker's turn is some round trips to JetStream).
const (
	maxHandBackSpacing = 10 * time.Millisecond
	minHandBackSpacing = 100 * time.Microsecond
)

// phoneSpacing is how long after the request handed back that holds a
// phone a later request for it is due: the budget's spacing, else the
// trickle's.
func (s *shares) phoneSpacing() time.Duration {
	if s.spacing > 0 {
		return s.spacing
	}
	return maxHandBackSpacing
}

// spacingLocked is the spacing of client's hand-backs: Daraja's budget's,
// or without one, half the time between two of the client's requests
// done lately. A fixed trickle there held a client done 1,000 times a
// second to 100 of its hand-backs a second, and a burst waited minutes
// after the workers had gone idle.
func (s *shares) spacingLocked(client string, now time.Time) time.Duration {
	if s.spacing > 0 {
		return s.spacing
	}
	p := s.paces[client]
	if p == nil || p.rate <= 0 {
		return maxHandBackSpacing
	}
	rate := p.rate
	if _, busy := s.inFlight[client]; busy {
		// Requests in flight and few done for a while (Daraja stalled,
		// say): the pace is what the open window says so far, not the
		// last one's. A stale fast pace sent a backlog back every 250
		// ms, 100 times the JetStream traffic of the trickle, until half
		// their deliveries took them past the share (review). The window
		// counts from the client's last start from none in flight: a
		// burst after a pause keeps the pace it had.
		if d := now.Sub(later(p.since, p.busy)); d >= 2*paceWindow {
			rate = min(rate, float64(p.n)/d.Seconds())
		}
	}
	if rate <= 0 {
		return maxHandBackSpacing
	}
	return min(maxHandBackSpacing, max(minHandBackSpacing, time.Duration(float64(time.Second)/(2*rate))))
}

// pace is how fast one client's requests are done, counted over windows
// of at least paceWindow: rate is the last whole window's (per second; 0
// until one has passed).
type pace struct {
	since time.Time // the window's start
	n     int       // requests done in it
	rate  float64
	busy  time.Time // when the client last went from none in flight to one
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

const paceWindow = 250 * time.Millisecond

// done counts a request done at now.
func (p *pace) done(now time.Time) {
	p.n++
	if d := now.Sub(p.since); d >= paceWindow {
		p.rate = float64(p.n) / d.Seconds()
		p.since, p.n = now, 0
	}
}
