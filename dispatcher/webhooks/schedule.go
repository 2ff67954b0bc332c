package webhooks

import (
	"math/rand/v2"
	"time"
)

// Backoff is the retry schedule of a delivery: after the n-th failed
// attempt the next waits Initial·Factorⁿ⁻¹, at most Max, each wait drawn
// within ±Jitter of it (so that the retries of many deliveries that failed
// together do not come back together); no retry begins once RetryFor has
// passed since the delivery was made, so the last attempt comes between
// RetryFor and RetryFor+Max after the first.
type Backoff struct {
	Initial  time.Duration
	Factor   float64
	Max      time.Duration
	RetryFor time.Duration
	Jitter   float64
}

// DefaultBackoff: waits of about 10 s, 40 s, 2m40s, 10m40s, 43 min,
// 2h50m, then 6 h, for 24 hours: 10 or 11 attempts.
var DefaultBackoff = Backoff{
	Initial:  10 * time.Second,
	Factor:   4,
	Max:      6 * time.Hour,
	RetryFor: 24 * time.Hour,
	Jitter:   0.2,
}

// Wait is the wait after the attempt-th failed attempt (1 for the first),
// before jitter.
func (b Backoff) Wait(attempt int) time.Duration {
	d := float64(b.Initial)
	for i := 1; i < attempt && d < float64(b.Max); i++ {
		d *= b.Factor
	}
	return min(time.Duration(d), b.Max)
}

// Next is the wait after the attempt-th failure with jitter, and whether
// there is to be a next attempt at all (first: when the delivery was made).
func (b Backoff) Next(attempt int, first, now time.Time) (time.Duration, bool) {
	if now.Sub(first) >= b.RetryFor {
		return 0, false
	}
	d := float64(b.Wait(attempt))
	d *= 1 + b.Jitter*(2*rand.Float64()-1)
	return time.Duration(d), true
}
