package api

import (
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/events/kit/tracing"
)

// traceRoutes traces every request when tr is set: a server span, the
// child of the caller's traceparent if it sends one, around everything
// else (it is echo's Pre middleware, so that the request log line carries
// the trace id). The publish of stk.requested is its child, and the
// payment's trace goes on from there (docs/TRACING.md).
func (h *Handler) traceRoutes(tr trace.Tracer) {
	if tr == nil {
		return
	}
	h.traced = true
	h.e.Pre(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			ctx, span := tracing.StartServer(r.Context(), tr, r, time.Time{})
			c.SetRequest(r.WithContext(ctx))
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			tracing.EndServer(span, r.Method, c.Path(), c.Response().Status, trackingIDOf(c))
			return nil
		}
	})
}
