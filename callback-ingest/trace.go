package callback

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/events/kit/tracing"
)

// traceCallback starts the span of a callback about to be applied, begun
// when it arrived, in its payment's trace: Safaricom sends no traceparent,
// so the span is the child of the traceparent the api stored with the
// payment's stk.requested (the publish span's). A child rather than a link:
// a payment has one outcome, and its trace is only whole with it; the
// trace's last span then comes as late as the customer answers. The
// callback's stk.completed, published with ctx, continues the trace to the
// projector. Without tracing, or without a stored traceparent (a payment
// requested while tracing was off), the span is ctx's own, which is a
// no-op, or a new trace's root.
//
// stored is the headers of the payment's stk.requested as match read them
// (matched.requestHeader): the request is stored once and never changes,
// so a second read of it would only cost a round trip.
func (h *handler) traceCallback(ctx context.Context, r *http.Request, id string, arrived time.Time, stored map[string][]string) (context.Context, trace.Span) {
	tr := h.pub.Tracer
	if tr == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	ctx, span := tracing.StartJoined(ctx, tr, r, stored, arrived)
	span.SetName(r.Method + " " + RoutePrefix + "*")
	span.SetAttributes(tracing.KeyTrackingID.String(id))
	return ctx, span
}
