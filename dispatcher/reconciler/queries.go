package reconciler

import (
	"context"
	"sync"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
)

// queries shares Daraja's STK query answers among everything in one
// reconciler that asks about the same CheckoutRequestID: the dispatched
// timer, and every copy of a callback held on stkcb.confirm.<id>, which a
// forger holding one CallBackURL can post as often as he likes. Askers while
// a query is under way wait for its answer; an answer is then reused until
// the next interval, which doubles with each answer for the id from
// QueryInterval up to QueryMaxInterval, as one query loop's would. So N
// copies cost about what one costs, and Daraja's budget (DARAJA_MAX_RPS,
// shared with every client's pushes) is not eaten by one payment.
//
// Reuse cannot matter for money: "still being processed" (or "does not
// exist", or a failed call) only makes the asker wait, for no longer than
// one loop would; a final answer is final. An answer given before a time
// that matters (the unknown deadline) is not reused after it (notBefore).
type queries struct {
	query       func(ctx context.Context, checkoutID string) (daraja.QueryResult, error)
	clock       func() time.Time
	interval    time.Duration
	maxInterval time.Duration

	mu        sync.Mutex
	byID      map[string]*answer
	lastSweep time.Time
}

// answer is one STK query's outcome, or the query under way.
type answer struct {
	res daraja.QueryResult
	err error
	// at is when the query was asked: Daraja's answer is no older.
	at time.Time
	// until is when the answer stops being reused; zero while under way.
	until time.Time
	// asked counts the queries about the id so far: the interval doubles
	// with each.
	asked int
	done  chan struct{} // closed once res, err and until are set
}

func newQueries(query func(context.Context, string) (daraja.QueryResult, error), interval, maxInterval time.Duration, clock func() time.Time) *queries {
	return &queries{query: query, clock: clock, interval: interval, maxInterval: maxInterval, byID: map[string]*answer{}}
}

// ask returns Daraja's answer about checkoutID: the one under way or still
// fresh, if it was asked at or after notBefore, else a new query's.
func (q *queries) ask(ctx context.Context, checkoutID string, notBefore time.Time) answer {
	for {
		a, mine := q.claim(checkoutID, notBefore)
		if mine {
			return q.run(ctx, checkoutID, a)
		}
		select {
		case <-a.done:
		case <-ctx.Done():
			return answer{err: ctx.Err(), at: q.clock()}
		}
		if !a.until.IsZero() && !a.at.Before(notBefore) {
			return *a
		}
		// Its asker stopped before the answer, or it was asked too early
		// for this asker: ask again.
	}
}

// claim returns the answer to wait for, or a new one the caller must run.
func (q *queries) claim(checkoutID string, notBefore time.Time) (a *answer, mine bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.clock()
	q.sweep(now)
	prev := q.byID[checkoutID]
	if prev != nil {
		select {
		case <-prev.done:
			if now.Before(prev.until) && !prev.at.Before(notBefore) {
				return prev, false
			}
		default:
			// Under way: waited for, then looked at again.
			return prev, false
		}
	}
	a = &answer{at: now, done: make(chan struct{})}
	if prev != nil {
		a.asked = prev.asked
	}
	a.asked++
	q.byID[checkoutID] = a
	return a, true
}

// run asks Daraja for a, claimed by the caller, and publishes the answer.
func (q *queries) run(ctx context.Context, checkoutID string, a *answer) answer {
	res, err := q.query(ctx, checkoutID)
	q.mu.Lock()
	a.res, a.err = res, err
	a.until = q.clock().Add(q.step(a.asked))
	if ctx.Err() != nil {
		// The asker stopped (shutting down): not Daraja's answer.
		a.until = time.Time{}
	}
	close(a.done)
	q.mu.Unlock()
	return *a
}

// step is the interval an answer is reused after the n-th query about an id.
func (q *queries) step(n int) time.Duration {
	d := q.interval
	for i := 1; i < n && d < q.maxInterval; i++ {
		d *= 2
	}
	return min(d, q.maxInterval)
}

// sweep forgets, at most once per maxInterval, the answers that stopped
// being reused more than maxInterval ago (an id asked about again then
// starts from interval). Called with mu held.
func (q *queries) sweep(now time.Time) {
	if now.Sub(q.lastSweep) < q.maxInterval {
		return
	}
	q.lastSweep = now
	for id, a := range q.byID {
		select {
		case <-a.done:
			if now.Sub(a.until) > q.maxInterval {
				delete(q.byID, id)
			}
		default:
		}
	}
}

// left is how long the answer is still reused from now: an asker given it
// waits at least that long before asking again, since until then it would
// be given the same answer.
func (a answer) left(now time.Time) time.Duration {
	return max(a.until.Sub(now), 0)
}
