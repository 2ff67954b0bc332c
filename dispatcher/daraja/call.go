package daraja

// One call to Daraja: the request sent, its answer read and decoded.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// maxBody bounds how much of an answer is read: Daraja's are tiny, a
// gateway page a few KiB.
const maxBody = 1 << 20

// marshal encodes without escaping &, < and > so the body reads as Daraja's
// documentation writes it.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// decoder reads one answer: status, headers and (at most maxBody of) body.
type decoder func(status int, h http.Header, body []byte) error

// call makes an authenticated POST. If Daraja refuses the access token, it
// fetches a new one and sends the request once more: a refused token means
// the request was not processed. A request with a sendBy (zero: none) is
// not sent after it (PushRequest.SendBy).
func (c *Client) call(ctx context.Context, op, path string, sendBy time.Time, build func() ([]byte, error), decode decoder) error {
	for attempt := 0; ; attempt++ {
		tctx, cancel := untilSendBy(ctx, sendBy)
		tok, err := c.accessToken(tctx)
		// Read before cancel, which ends tctx whatever happened.
		late := tctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil {
			if late {
				return sendByPassed(op)
			}
			return tokenError(ctx, op, err)
		}
		body, err := build()
		if err != nil {
			return &Error{Op: op, Kind: KindRefused, Code: CodeInvalidRequest, Message: "encoding the request", err: err}
		}
		err = c.post(ctx, op, path, tok, body, sendBy, decode)
		var e *Error
		if attempt == 0 && errors.As(err, &e) && e.invalidToken {
			c.dropToken(tok)
			continue
		}
		return err
	}
}

// untilSendBy is ctx bounded by sendBy, when there is one.
func untilSendBy(ctx context.Context, sendBy time.Time) (context.Context, context.CancelFunc) {
	if sendBy.IsZero() {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, sendBy)
}

// post sends one request, once MaxRPS allows, and decodes its answer. A
// request with a sendBy is given up, unsent, when it could not be written
// by then.
func (c *Client) post(parent context.Context, op, path, tok string, body []byte, sendBy time.Time, decode decoder) error {
	wctx, wcancel := untilSendBy(parent, sendBy)
	err := c.wait(wctx, op)
	wcancel()
	if err != nil {
		// The limiter fails at once when the slot would come after the
		// deadline; sendBy's, unless the caller's own comes first.
		if d, ok := parent.Deadline(); parent.Err() == nil && !sendBy.IsZero() && (!ok || sendBy.Before(d)) {
			return sendByPassed(op)
		}
		return err
	}
	ctx, cancel := context.WithTimeout(parent, c.timeout)
	defer cancel()
	var sent atomic.Bool
	if !sendBy.IsZero() {
		if !time.Now().Before(sendBy) {
			return sendByPassed(op)
		}
		// Not written by sendBy (a slow connection): given up. Written
		// meanwhile, it runs its course.
		var late context.CancelCauseFunc
		ctx, late = context.WithCancelCause(ctx)
		stop := time.AfterFunc(time.Until(sendBy), func() {
			if !sent.Load() {
				late(ErrSendByPassed)
			}
		})
		defer stop.Stop()
		defer late(nil)
	}
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				sent.Store(true)
			}
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return &Error{Op: op, Kind: KindRefused, Code: CodeInvalidRequest, Message: "building the request", err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	err = c.roundTrip(parent, op, req, &sent, decode)
	if err != nil && !sent.Load() && errors.Is(context.Cause(ctx), ErrSendByPassed) {
		return sendByPassed(op)
	}
	return err
}

// roundTrip sends req and hands the answer to decode. sent is set by the
// request's trace once the request has been written.
func (c *Client) roundTrip(parent context.Context, op string, req *http.Request, sent *atomic.Bool, decode decoder) error {
	resp, err := c.hc.Do(req)
	if err != nil {
		return transportError(parent, op, err, sent.Load())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			// An accepted request whose answer was lost on the way.
			e := transportError(parent, op, err, true)
			e.HTTPStatus = resp.StatusCode
			if e.Kind != KindCanceled && op == opOAuth {
				e.Kind = KindTransient
			}
			return e
		}
		// The status alone says enough; a partial body is read as a page.
		body = nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody)) // lets the connection be reused
	return decode(resp.StatusCode, resp.Header, body)
}
