package daraja

// The OAuth access token: fetched once, shared, and replaced before it expires.

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// tokenMargin is how long before its announced expiry a token is replaced,
// so that a token never expires between the check and Daraja's reading it.
const tokenMargin = time.Minute

// tokenFetch is one OAuth call that every caller needing a token waits on.
type tokenFetch struct {
	done  chan struct{}
	token string
	err   error
}

// accessToken returns a valid token, fetching one when there is none or it
// is about to expire. Concurrent callers share one fetch; each waits for it
// only as long as its own ctx allows.
func (c *Client) accessToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	if c.token != "" && c.now().Before(c.expires) {
		tok := c.token
		c.mu.Unlock()
		return tok, nil
	}
	f := c.fetching
	if f == nil {
		f = &tokenFetch{done: make(chan struct{})}
		c.fetching = f
		// The fetch outlives a caller that gives up, so the callers still
		// waiting get its token; it is bounded by c.timeout.
		go c.fetchToken(context.WithoutCancel(ctx), f)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		return "", transportError(ctx, opOAuth, ctx.Err(), false)
	}
}

func (c *Client) fetchToken(ctx context.Context, f *tokenFetch) {
	start := c.now()
	tok, ttl, err := c.oauth(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		margin := tokenMargin
		if ttl < 4*margin {
			// A short-lived token (a test server's) still gets used.
			margin = ttl / 4
		}
		c.token, c.expires = tok, start.Add(ttl-margin)
	}
	f.token, f.err = tok, err
	c.fetching = nil
	close(f.done)
}

// dropToken forgets tok after Daraja refused it, unless another caller has
// already replaced it.
func (c *Client) dropToken(tok string) {
	c.mu.Lock()
	if c.token == tok {
		c.token, c.expires = "", time.Time{}
	}
	c.mu.Unlock()
}

// oauth makes the OAuth call, once MaxRPS allows.
func (c *Client) oauth(parent context.Context) (string, time.Duration, error) {
	if err := c.wait(parent, opOAuth); err != nil {
		return "", 0, err
	}
	ctx, cancel := context.WithTimeout(parent, c.timeout)
	defer cancel()
	var sent atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				sent.Store(true)
			}
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+PathOAuth+"?grant_type=client_credentials", nil)
	if err != nil {
		return "", 0, &Error{Op: opOAuth, Kind: KindRefused, Code: CodeInvalidRequest, Message: "building the request", err: err}
	}
	req.Header.Set("Authorization", c.basic)
	req.Header.Set("Accept", "application/json")
	var (
		tok string
		ttl time.Duration
	)
	err = c.roundTrip(parent, opOAuth, req, &sent, func(status int, h http.Header, body []byte) error {
		var err error
		tok, ttl, err = decodeToken(status, h, body)
		return err
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Kind == KindAmbiguous {
			// Nothing is pushed by an OAuth call: whatever happened to it,
			// trying again is harmless.
			e.Kind = KindTransient
		}
		return "", 0, err
	}
	return tok, ttl, nil
}

// tokenError is the error of a push or query that could not get a token:
// the request itself was never sent, so it is at worst transient, unless
// the credentials were refused (a configuration error) or the caller gave
// up. It carries the token answer's status and code (an empty OAuth 400 is
// "http.400"), never its Uncertain: nothing was pushed.
func tokenError(ctx context.Context, op string, err error) error {
	e := &Error{Op: op, Kind: KindTransient, err: err}
	var te *Error
	if errors.As(err, &te) {
		e.HTTPStatus, e.RequestID, e.Code, e.RetryAfter = te.HTTPStatus, te.RequestID, te.Code, te.RetryAfter
		e.Message = cleanText("getting an access token: " + te.Message)
		if te.Kind == KindRefused {
			e.Kind = KindRefused
		}
	} else {
		e.Code = CodeUnreachable
		e.Message = "getting an access token"
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		e.Kind, e.Code = KindCanceled, CodeCanceled
		e.Message = "canceled by the caller while getting an access token"
	}
	return e
}
