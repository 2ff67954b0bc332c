package api

// The middleware every request goes through: its access line (logRequests),
// the client's address, and authentication.

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/stkgate/stkgate/events/kit/redact"
)

// logRequests logs every request once it is answered (never its token or
// body), answers the errors of the handlers, and turns a panic into a 500.
func (h *Handler) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) (err error) {
		start := time.Now()
		c := &reqContext{Context: ec}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				err = fmt.Errorf("panic: %v", p)
				h.log.Error("panic in handler", "tracking_id", c.trackingID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
			if err != nil {
				// ec.Error would answer with ec, which knows neither
				// the client nor the tracking id.
				h.handleError(err, c)
				err = nil
			}
			h.logAccess(c, start)
			if h.traced && c.trackingID != "" {
				ec.Set(ctxTrackingID, c.trackingID) // for the server span (traceRoutes)
			}
		}()
		return next(c)
	}
}

// logAccess logs the access line of c, a request begun at start: on the
// access logger (held, written in batches) below 500, on the logger
// (written at once) from 500. The record goes to the handler itself:
// Logger.LogAttrs would look up its caller's pc, which no handler here
// shows (no AddSource), for a tenth of the line's cost.
func (h *Handler) logAccess(c echo.Context, start time.Time) {
	status := c.Response().Status
	level, log := slog.LevelInfo, h.access
	if status >= 500 {
		level, log = slog.LevelWarn, h.log
	}
	ctx := c.Request().Context()
	handler := log.Handler()
	if !handler.Enabled(ctx, level) {
		return
	}
	// Room for every attr below: appending to a slice of six grew it on
	// every authenticated request.
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs,
		slog.String("method", c.Request().Method),
		slog.String("path", shortPath(c)),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.Int64("bytes", c.Response().Size),
		slog.String("remote", c.Request().RemoteAddr),
	)
	if cl := clientOf(c); cl != "" {
		attrs = append(attrs, slog.String("client", cl))
	}
	if id := trackingIDOf(c); id != "" {
		attrs = append(attrs, slog.String("tracking_id", id))
	}
	r := slog.NewRecord(time.Now(), level, "request", 0)
	r.AddAttrs(attrs...)
	_ = handler.Handle(ctx, r)
}

// shortPath is the request's path, cut short, its phone numbers masked: it
// is the client's text.
func shortPath(c echo.Context) string {
	p := redact.Phones(c.Request().URL.Path)
	if len(p) > 200 {
		p = p[:200] + "…"
	}
	return p
}

// ipExtractor finds a request's source address: the TCP peer, or, when the
// peer is one of trusted, the right-most address of X-Forwarded-For that is
// not (each proxy appends the address it got the request from; what is
// left of it is whatever the client wrote). echo's default would believe
// X-Forwarded-For from anyone, and its extractor trusts loopback, private
// and link-local peers unless told not to.
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{
			IP:   net.IP(p.Addr().AsSlice()),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// authenticate lets through a request whose X-API-Token belongs to a
// client (of API_TOKENS or of the database), and records which client: it
// scopes everything after. A token the database could not check is a 503;
// a source address that failed too often is a 429.
func (h *Handler) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		source, _ := netip.ParseAddr(c.RealIP()) // unreadable: the zero address, shared
		client, err := h.tokens.client(c.Request().Context(), c.Request().Header.Get(TokenHeader), source)
		var limited *limitedError
		if errors.As(err, &limited) {
			h.log.Warn("request refused: too many failed authentications from its address", "source", source.String(),
				"retry_after_s", limited.retryAfter)
			return err
		}
		if err != nil {
			return &unavailableError{message: MsgAuthUnavailable, cause: err}
		}
		if client == "" {
			return errUnauthenticated
		}
		setClient(c, client)
		return next(c)
	}
}
