package daraja

// The outbound rate limit, one limiter per Daraja app in this process.

import (
	"context"
	"sync"

	"golang.org/x/time/rate"
)

// limiters are the outbound limiters of this process, one per Daraja app.
var limiters = struct {
	mu sync.Mutex
	m  map[[2]string]*rate.Limiter
}{m: map[[2]string]*rate.Limiter{}}

// sharedLimiter is the limiter of the app (base, consumerKey), made on
// first use; of two rates asked for, the lower holds. Its burst is one:
// Daraja's spike arrest counts in slices of a second, so calls are spaced
// evenly rather than let through in bursts.
func sharedLimiter(base, consumerKey string, perSecond float64) *rate.Limiter {
	limiters.mu.Lock()
	defer limiters.mu.Unlock()
	k := [2]string{base, consumerKey}
	l := limiters.m[k]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(perSecond), 1)
		limiters.m[k] = l
	} else if rate.Limit(perSecond) < l.Limit() {
		l.SetLimit(rate.Limit(perSecond))
	}
	return l
}

// wait waits for a slot under MaxRPS, as long as ctx allows. Its error
// means nothing was sent.
func (c *Client) wait(ctx context.Context, op string) error {
	if c.limit == nil {
		return nil
	}
	if err := c.limit.Wait(ctx); err != nil {
		e := transportError(ctx, op, err, false)
		if e.Kind != KindCanceled {
			e.Message = "not sent: no slot under the outbound rate limit (MaxRPS) in time"
		}
		return e
	}
	return nil
}
