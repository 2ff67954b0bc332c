package api

// What the middleware and handlers share about a request (reqContext), and the
// contexts of the polls' reads.

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
)

// reqContext is a request's echo.Context with what the middleware and
// handlers share about it: its client (authenticate) and its payment's
// tracking id. logRequests makes it and hands it down the chain; echo's
// own store (c.Set) made a map and boxed each value, every request.
type reqContext struct {
	echo.Context
	client, trackingID string
}

// Keys of the same values on a context that is not a reqContext: one
// made outside logRequests (a test), and echo's own, before logRequests
// and after it, where the tracing middleware reads the tracking id
// (logRequests copies it there when tracing is on).
const (
	ctxClient     = "stkgate.client"
	ctxTrackingID = "stkgate.tracking_id"
)

func clientOf(c echo.Context) string {
	if rc, ok := c.(*reqContext); ok {
		return rc.client
	}
	s, _ := c.Get(ctxClient).(string)
	return s
}

func trackingIDOf(c echo.Context) string {
	if rc, ok := c.(*reqContext); ok {
		return rc.trackingID
	}
	s, _ := c.Get(ctxTrackingID).(string)
	return s
}

func setClient(c echo.Context, client string) {
	if rc, ok := c.(*reqContext); ok {
		rc.client = client
		return
	}
	c.Set(ctxClient, client)
}

func setTrackingID(c echo.Context, id string) {
	if rc, ok := c.(*reqContext); ok {
		rc.trackingID = id
		return
	}
	c.Set(ctxTrackingID, id)
}

// readContexts hands out the contexts of the polls' reads: one shared by
// the reads begun within readContextSlack of each other, whose deadline is
// readTimeout to readTimeout+readContextSlack after each of them began. A
// context of a read's own (context.WithTimeout) was some 1 µs and six
// allocations of a poll. The shared one carries no value of the request
// (nothing under the read looks for one) and is never cancelled but by its
// deadline; each lives until then, some 50 at a time.
type readContexts struct {
	cur atomic.Pointer[readContext]
}

// readContextSlack is how much longer than readTimeout a poll's read may
// be given.
const readContextSlack = 100 * time.Millisecond

type readContext struct {
	ctx      context.Context
	cancel   context.CancelFunc // called by no one: the deadline cancels ctx
	deadline time.Time
}

// get is the context of a read begun at now.
func (r *readContexts) get(now time.Time) context.Context {
	if c := r.cur.Load(); c != nil && c.deadline.Sub(now) >= readTimeout {
		return c.ctx
	}
	c := &readContext{deadline: now.Add(readTimeout + readContextSlack)}
	c.ctx, c.cancel = context.WithDeadline(context.Background(), c.deadline)
	r.cur.Store(c) // a read racing this one may store its own: either serves
	return c.ctx
}
