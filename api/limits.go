package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/envconf"
)

// Abuse limits: a token bucket per client on every /api request, and a
// limit on the prompts a phone receives, shared by every client and every
// api instance through Postgres.

// Defaults of the limits (ConfigFromEnv). DefaultRateLimit is half the
// dispatcher's default DARAJA_MAX_RPS (20): each payment may cost Daraja a
// push and an STK query, so one client at its full rate cannot use up
// Daraja's budget by itself.
const (
	DefaultRateLimit       = 10.0
	DefaultRateBurst       = 20
	DefaultPhoneMaxPrompts = 5
	DefaultPhoneWindow     = time.Hour
	// MinPhoneWindow and MaxPhoneWindow bound PHONE_WINDOW.
	MinPhoneWindow = time.Minute
	MaxPhoneWindow = 7 * 24 * time.Hour
)

// MsgRateLimited is the 429 of a client over its request rate.
const MsgRateLimited = "Too many requests from this client. Retry after the time in the Retry-After header."

// MsgPhoneLimited is the 429 of a phone at its prompt limit. It says
// nothing of the requests that reached the limit (how many, when, from
// which client): the limit is shared by every client.
const MsgPhoneLimited = "This phone number cannot receive more payment requests for now. Retry after the time in the Retry-After header."

// limitedError is a 429: a limit was reached. Nothing was sent.
type limitedError struct {
	message string
	// retryAfter is the Retry-After, in whole seconds, at least 1.
	retryAfter int
}

func (e *limitedError) Error() string { return e.message }

// Is lets a refusal count as certainly not published (publishNotStored).
func (e *limitedError) Is(target error) bool { return target == errNotSent }

// errNotSent marks an error of a request that was refused before anything
// was published.
var errNotSent = errors.New("refused before publishing")

// retrySeconds is d in whole seconds, rounded up, at least 1: a client that
// waits that long finds the slot free.
func retrySeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	return max(s, 1)
}

// clientLimits holds a token bucket per client.
//
// Its memory is bounded: an entry is made only for an authenticated client
// (so by a known token, never by an anonymous request), and an entry idle
// long enough for its bucket to be full again is deleted, which loses
// nothing, since a new bucket starts full. So it holds at most the clients
// active within the last refill time (burst / rate) plus the sweep
// interval.
type clientLimits struct {
	limit rate.Limit
	burst int
	// refill is how long an empty bucket takes to fill up again.
	refill time.Duration

	mu        sync.Mutex
	buckets   map[string]*clientBucket
	lastSweep time.Time
}

type clientBucket struct {
	lim  *rate.Limiter
	last time.Time
}

// sweepInterval is how often idle buckets are looked for.
const sweepInterval = time.Minute

// newClientLimits returns the limits, or nil (no limit) when perSecond is 0.
func newClientLimits(perSecond float64, burst int) *clientLimits {
	if perSecond <= 0 {
		return nil
	}
	return &clientLimits{
		limit:   rate.Limit(perSecond),
		burst:   burst,
		refill:  time.Duration(float64(burst) / perSecond * float64(time.Second)),
		buckets: map[string]*clientBucket{},
	}
}

// take takes a token of client's bucket at now; when there is none, it
// takes nothing and says how long until there is one.
func (l *clientLimits) take(client string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepInterval {
		l.lastSweep = now
		for name, b := range l.buckets {
			if now.Sub(b.last) > l.refill {
				delete(l.buckets, name)
			}
		}
	}
	b := l.buckets[client]
	if b == nil {
		b = &clientBucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[client] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second // burst 0: never happens with a checked Config
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// size is the number of buckets held (for tests).
func (l *clientLimits) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// limitClient refuses, with 429 and Retry-After, a request of a client over
// its rate. It runs after authenticate: the client is known.
func (h *Handler) limitClient(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if h.clientLimits == nil {
			return next(c)
		}
		client := clientOf(c)
		ok, wait := h.clientLimits.take(client, time.Now())
		if !ok {
			h.log.Warn("request refused: client over its rate limit", "client", client,
				"rate_limit", float64(h.clientLimits.limit), "rate_burst", h.clientLimits.burst, "retry_after", wait.String())
			return &limitedError{message: MsgRateLimited, retryAfter: retrySeconds(wait)}
		}
		return next(c)
	}
}

// reservePrompt reserves a prompt slot of phone for the request id, or
// answers 429 when the phone had its PhoneMaxPrompts in the window.
// Postgres not answering is a 503: the limit is not waived.
func (h *Handler) reservePrompt(ctx context.Context, client, id, phone string) error {
	if h.phoneMax <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
	defer cancel()
	slot, err := h.store.ReservePrompt(ctx, phone, id, h.phoneMax, h.phoneWindow)
	if err != nil {
		return &unavailableError{message: MsgUnavailable, cause: fmt.Errorf("%w: %w", errNotSent, err)}
	}
	if slot.Reserved {
		return nil
	}
	// The client is told to wait the whole window, not until the oldest
	// request leaves it: that would tell when another client prompted the
	// phone. The log, for operators, has the real wait.
	h.log.Warn("request refused: phone at its prompt limit", "tracking_id", id, "client", client,
		"phone", events.MaskPhone(phone), "phone_max_prompts", h.phoneMax, "phone_window", h.phoneWindow.String(),
		"frees_in_s", retrySeconds(slot.RetryAfter))
	return &limitedError{message: MsgPhoneLimited, retryAfter: retrySeconds(h.phoneWindow)}
}

// releasePrompt gives back the slot of a request that was certainly not
// published. A failure costs the phone one slot until the window passes.
func (h *Handler) releasePrompt(ctx context.Context, id string) {
	if h.phoneMax <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
	defer cancel()
	if err := h.store.ReleasePrompt(ctx, id); err != nil {
		h.log.Warn("cannot release the prompt slot of a request not published", "tracking_id", id, "error", err)
	}
}

// maxRateBurst and maxPhoneMaxPrompts bound API_RATE_BURST and
// PHONE_MAX_PROMPTS: beyond them the limit is no limit.
const (
	maxRateBurst       = 100000
	maxPhoneMaxPrompts = 1000
)

// maxClientMaxQueued bounds API_CLIENT_MAX_QUEUED: one client queued to
// the dispatcher consumer's MaxAckPending holds up every other client.
var maxClientMaxQueued = events.DispatcherConsumer().MaxAckPending

// defaultBurst is API_RATE_BURST's default: two seconds' worth of requests.
func defaultBurst(perSecond float64) int {
	return max(1, int(math.Ceil(2*perSecond)))
}

// limitsFromEnv reads API_RATE_LIMIT, API_RATE_BURST, PHONE_MAX_PROMPTS,
// PHONE_WINDOW and API_CLIENT_MAX_QUEUED. A burst or window is bounded only
// while its limit is on; a burst given with the rate limit off is ignored.
func limitsFromEnv(e *envconf.Env, c *Config) {
	c.RateLimit = e.Float("API_RATE_LIMIT", DefaultRateLimit, 0, math.Inf(1))
	if c.RateLimit > 0 {
		c.RateBurst = e.Int("API_RATE_BURST", defaultBurst(c.RateLimit), 1, maxRateBurst)
	} else {
		e.Int("API_RATE_BURST", 0, math.MinInt, math.MaxInt) // still a whole number
		c.RateBurst = 0
	}
	c.PhoneMaxPrompts = e.Int("PHONE_MAX_PROMPTS", DefaultPhoneMaxPrompts, 0, maxPhoneMaxPrompts)
	lo, hi := MinPhoneWindow, MaxPhoneWindow
	if c.PhoneMaxPrompts == 0 {
		lo, hi = envconf.MinDuration, envconf.MaxDuration
	}
	c.PhoneWindow = e.Duration("PHONE_WINDOW", DefaultPhoneWindow, lo, hi)
	c.ClientMaxQueued = e.Int("API_CLIENT_MAX_QUEUED", DefaultClientMaxQueued, 0, maxClientMaxQueued)
}

// checkLimits reports the limits out of range, named by their variables.
func (c Config) checkLimits() []error {
	var errs []error
	if c.RateLimit < 0 || math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) {
		errs = append(errs, fmt.Errorf("API_RATE_LIMIT: %v is not 0 (no limit) or more", c.RateLimit))
	}
	if c.RateLimit > 0 && (c.RateBurst < 1 || c.RateBurst > maxRateBurst) {
		errs = append(errs, fmt.Errorf("API_RATE_BURST: %d is not from 1 to %d", c.RateBurst, maxRateBurst))
	}
	if c.PhoneMaxPrompts < 0 || c.PhoneMaxPrompts > maxPhoneMaxPrompts {
		errs = append(errs, fmt.Errorf("PHONE_MAX_PROMPTS: %d is not from 0 (no limit) to %d", c.PhoneMaxPrompts, maxPhoneMaxPrompts))
	}
	if c.PhoneMaxPrompts > 0 && (c.PhoneWindow < MinPhoneWindow || c.PhoneWindow > MaxPhoneWindow) {
		errs = append(errs, fmt.Errorf("PHONE_WINDOW: %s is not from %s to %s", c.PhoneWindow, MinPhoneWindow, envconf.Short(MaxPhoneWindow)))
	}
	if c.ClientMaxQueued < 0 || c.ClientMaxQueued > maxClientMaxQueued {
		errs = append(errs, fmt.Errorf("API_CLIENT_MAX_QUEUED: %d is not from 0 (no limit) to %d (the dispatcher's MaxAckPending)",
			c.ClientMaxQueued, maxClientMaxQueued))
	}
	return errs
}
