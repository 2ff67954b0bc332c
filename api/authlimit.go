package api

// The limit on failed authentications per source address.

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// MsgAuthFailuresLimited is the 429 of a source address that failed to
// authenticate too often.
const MsgAuthFailuresLimited = "Too many failed authentications from this address. Retry after the time in the Retry-After header."

// Defaults of the limit on failed authentications per source address
// (ConfigFromEnv).
const (
	DefaultAuthFailLimit = 1.0
	DefaultAuthFailBurst = 20
	// maxSources bounds the addresses whose failures are counted.
	maxSources = 10000
)

// sourceLimits is a token bucket of failed authentications per source
// address (an IPv6 address counts by its /64, which one holder usually
// has whole). Its memory is bounded: at most maxSources addresses, those
// idle long enough for their bucket to be full again dropped first.
type sourceLimits struct {
	limit  rate.Limit
	burst  int
	refill time.Duration

	mu      sync.Mutex
	buckets map[netip.Addr]*sourceBucket
}

type sourceBucket struct {
	lim  *rate.Limiter
	last time.Time
}

// newSourceLimits returns the limits, or nil (no limit) when perSecond is 0.
func newSourceLimits(perSecond float64, burst int) *sourceLimits {
	if perSecond <= 0 {
		return nil
	}
	return &sourceLimits{
		limit:   rate.Limit(perSecond),
		burst:   burst,
		refill:  time.Duration(float64(burst) / perSecond * float64(time.Second)),
		buckets: map[netip.Addr]*sourceBucket{},
	}
}

// sourceKey is what source's failures are counted under.
func sourceKey(source netip.Addr) netip.Addr {
	source = source.Unmap()
	if source.Is6() {
		p, _ := source.Prefix(64)
		return p.Addr()
	}
	return source
}

// reserve takes a failure from source's bucket at now, to be given back
// (CancelAt) if the authentication does not fail; when there is none, it
// takes nothing and says how long until there is one.
func (l *sourceLimits) reserve(source netip.Addr, now time.Time) (*rate.Reservation, time.Duration) {
	key := sourceKey(source)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		makeRoom(l.buckets, maxSources, now, func(b *sourceBucket) time.Time { return b.last.Add(l.refill) })
		b = &sourceBucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return nil, time.Second // burst 0: never happens with a checked Config
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return nil, d
	}
	return r, 0
}

// size is the number of addresses counted (for tests).
func (l *sourceLimits) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
