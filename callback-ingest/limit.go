package callback

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxRefusedSources bounds the sources whose storage of refused callbacks
// is counted apart (about 100 bytes each).
const maxRefusedSources = 10000

// sourceLimits is a token bucket per source, for the storage of callbacks
// refused before their token was verified.
//
// Its memory is bounded whatever the number of sources: it holds at most
// max buckets. A bucket idle long enough to be full again is deleted, which
// loses nothing, since a new bucket starts full; when every one of the max
// buckets is in use, a new source shares one overflow bucket with every
// other source not held, so a flood from more addresses than that counts
// as one source more.
type sourceLimits struct {
	limit rate.Limit
	burst int
	max   int
	// refill is how long an empty bucket takes to fill up again.
	refill time.Duration

	mu        sync.Mutex
	buckets   map[netip.Prefix]*sourceBucket
	overflow  sourceBucket
	lastSweep time.Time
	// all bounds every source together (nil: no bound): a flood from more
	// sources than max (an IPv6 /48 holds 65,536 /64s) fills the table
	// with full buckets, and would otherwise be stored at max × burst.
	all *rate.Limiter
}

type sourceBucket struct {
	lim  *rate.Limiter
	last time.Time
	// limited: the last take was refused.
	limited bool
}

// sourceSweepInterval is how often, at most, a full table is searched for
// idle buckets: a flood of new sources must not make every take a scan.
const sourceSweepInterval = time.Second

// withTotal bounds every source together at perSecond, with bursts of
// burst.
func (l *sourceLimits) withTotal(perSecond float64, burst int) *sourceLimits {
	l.all = rate.NewLimiter(rate.Limit(perSecond), burst)
	return l
}

func newSourceLimits(perSecond float64, burst, max int) *sourceLimits {
	return &sourceLimits{
		limit:    rate.Limit(perSecond),
		burst:    burst,
		max:      max,
		refill:   time.Duration(float64(burst) / perSecond * float64(time.Second)),
		buckets:  map[netip.Prefix]*sourceBucket{},
		overflow: sourceBucket{lim: rate.NewLimiter(rate.Limit(perSecond), burst)},
	}
}

// take takes a token of source's bucket at now. first reports a refusal
// after a take that was not refused: the start of a run, worth one log
// line.
func (l *sourceLimits) take(source netip.Prefix, now time.Time) (ok, first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[source]
	if b == nil {
		if len(l.buckets) >= l.max && now.Sub(l.lastSweep) >= sourceSweepInterval {
			l.lastSweep = now
			for k, idle := range l.buckets {
				if now.Sub(idle.last) > l.refill {
					delete(l.buckets, k)
				}
			}
		}
		if len(l.buckets) < l.max {
			b = &sourceBucket{lim: rate.NewLimiter(l.limit, l.burst)}
			l.buckets[source] = b
		} else {
			b = &l.overflow
		}
	}
	b.last = now
	if b.lim.AllowN(now, 1) && (l.all == nil || l.all.AllowN(now, 1)) {
		b.limited = false
		return true, false
	}
	first = !b.limited
	b.limited = true
	return false, first
}

// size is the number of buckets held (for tests).
func (l *sourceLimits) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// sourceKey is what a source is counted by: its IPv4 address, or its IPv6
// /64 (a single host is commonly given a whole /64). An unreadable source
// is the zero Prefix: all of them count as one.
func sourceKey(addr netip.Addr, ok bool) netip.Prefix {
	if !ok || !addr.IsValid() {
		return netip.Prefix{}
	}
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, err := addr.WithZone("").Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}
