package api

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/stkgate/stkgate/api/store"
)

// A cap on each client's requests queued for the dispatcher: accepted and
// not yet dispatched (pushed to Daraja, or finished without a push). They
// are what holds the dispatcher consumer's MaxAckPending: a request waiting
// there (for a worker, for its client's share, for its phone) stays
// ack-pending until it is dispatched. Once MaxAckPending is full nats-server
// delivers nothing new, so one client's backlog would make every other
// client's requests wait behind it until RECONCILE_REQUEST_DEADLINE fails
// them. With each client capped at clientMaxQueued, MaxAckPending holds the
// backlogs of MaxAckPending / clientMaxQueued clients at their caps.
//
// The count is shared by every api instance through the read model: the
// client's stage-0 rows in stk_pushes, read at most every queuedRefresh
// per client, plus the requests this instance accepted that the projector
// has not written yet (each query also says which of those it has). What
// another instance accepted within the projector's delay is not seen: the
// overshoot is at most what the other instances accept for the client in
// that time plus queuedRefresh (their rate limit bounds it).

// DefaultClientMaxQueued is API_CLIENT_MAX_QUEUED's default: a tenth of the
// dispatcher consumer's MaxAckPending (10000), so that nine clients at
// their caps, with room for the overshoot, still leave it room for others.
const DefaultClientMaxQueued = 1000

// DefaultQueuedRefresh is how often a client's queued count is read from
// Postgres, at most.
const DefaultQueuedRefresh = 250 * time.Millisecond

// queuedRetryAfterSeconds is the Retry-After of a client at its cap: its
// queue drains at its share of Daraja's budget, several a second.
const queuedRetryAfterSeconds = 5

// localHorizon is how long an accepted request not yet seen in the read
// model is counted: longer than any projector delay short of an outage. One
// whose publish had an unknown outcome and was not stored after all is
// counted that long for nothing.
const localHorizon = 10 * time.Minute

// MsgQueueFull is the 429 of a client at its cap of queued requests.
const MsgQueueFull = "This client has too many payment requests waiting to be sent; nothing was sent. Retry after the time in the Retry-After header."

// queuedLimits counts each client's queued requests.
//
// Its memory is bounded by the authenticated clients (an entry is made
// only for one) and, per client, by the cap (only requests within it are
// counted locally); an idle entry with nothing local is swept.
type queuedLimits struct {
	max     int
	refresh time.Duration
	count   func(ctx context.Context, client string, ids []string) (store.Queued, error)

	mu        sync.Mutex
	clients   map[string]*queuedClient
	lastSweep time.Time
}

type queuedClient struct {
	name string
	mu   sync.Mutex
	// stored is the client's queued rows in the read model at loaded.
	stored int
	loaded time.Time // zero: never read
	// refreshing: requests reading the count; others use the last.
	refreshing int
	// local are the requests accepted here and not seen in the read
	// model, with when they were accepted.
	local map[string]time.Time
	// publishing are the requests let through and not published yet.
	publishing int
	last       time.Time
}

func newQueuedLimits(maxQueued int, refresh time.Duration, count func(context.Context, string, []string) (store.Queued, error)) *queuedLimits {
	if maxQueued <= 0 {
		return nil
	}
	if refresh <= 0 {
		refresh = DefaultQueuedRefresh
	}
	return &queuedLimits{max: maxQueued, refresh: refresh, count: count, clients: map[string]*queuedClient{}}
}

func (l *queuedLimits) client(name string, now time.Time) *queuedClient {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepInterval {
		l.lastSweep = now
		for n, c := range l.clients {
			c.mu.Lock()
			idle := len(c.local) == 0 && c.publishing == 0 && c.refreshing == 0 && now.Sub(c.last) > sweepInterval
			c.mu.Unlock()
			if idle {
				delete(l.clients, n)
			}
		}
	}
	c := l.clients[name]
	if c == nil {
		c = &queuedClient{name: name, local: map[string]time.Time{}}
		l.clients[name] = c
	}
	return c
}

// take lets request id of client through if the client is below its cap,
// and returns the function to call once its publish is over (stored: it
// may be in the stream). A client at its cap gets false. A request counted
// here already (a retry under its Idempotency-Key after an unknown outcome:
// the same tracking id) is let through without being counted again, as
// the phone's prompt slot is. The count is read from Postgres when older
// than the refresh; an error reading it is returned (the cap is not
// waived).
func (l *queuedLimits) take(ctx context.Context, client, id string) (done func(stored bool), queued int, ok bool, err error) {
	now := time.Now()
	c := l.client(client, now)
	c.mu.Lock()
	c.last = now
	if c.loaded.IsZero() || (now.Sub(c.loaded) >= l.refresh && c.refreshing == 0) {
		if err := l.reload(ctx, c, now); err != nil {
			c.mu.Unlock()
			return nil, 0, false, err
		}
	}
	defer c.mu.Unlock()
	queued = c.stored + len(c.local) + c.publishing
	_, counted := c.local[id]
	if queued >= l.max && !counted {
		return nil, queued, false, nil
	}
	if !counted {
		c.publishing++
	}
	var once sync.Once
	return func(stored bool) {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if !counted {
				c.publishing--
			}
			if stored {
				c.local[id] = time.Now()
			}
		})
	}, queued, true, nil
}

// reload reads c's count, with c.mu held on entry and on return; it is
// released during the query.
func (l *queuedLimits) reload(ctx context.Context, c *queuedClient, now time.Time) error {
	ids := make([]string, 0, len(c.local))
	for id, at := range c.local {
		if now.Sub(at) > localHorizon {
			delete(c.local, id)
			continue
		}
		ids = append(ids, id)
	}
	c.refreshing++
	c.mu.Unlock()
	q, err := l.count(ctx, c.name, ids)
	c.mu.Lock()
	c.refreshing--
	if err != nil {
		return fmt.Errorf("%w: %w", errNotSent, err)
	}
	if now.Before(c.loaded) {
		return nil // a later read finished first
	}
	c.stored = q.Count
	for _, id := range q.Seen {
		delete(c.local, id)
	}
	c.loaded = now
	return nil
}

// takeQueued lets request id of client through below the client's cap of
// queued requests, or answers 429. It returns the function to call with
// the outcome of the publish. Postgres not answering is a 503: the cap is
// not waived.
func (h *Handler) takeQueued(ctx context.Context, client, id string) (func(stored bool), error) {
	if h.queued == nil {
		return func(bool) {}, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
	defer cancel()
	done, n, ok, err := h.queued.take(ctx, client, id)
	if err != nil {
		return nil, &unavailableError{message: MsgUnavailable, cause: err}
	}
	if !ok {
		h.log.Warn("request refused: client at its cap of requests queued for the dispatcher", "tracking_id", id,
			"client", client, "queued", n, "client_max_queued", h.queued.max)
		return nil, &limitedError{message: MsgQueueFull, retryAfter: queuedRetryAfterSeconds}
	}
	return done, nil
}
