package worker

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/events/kit/tracing"
)

// traceHandle gives a handler's contexts the consumer span of msg, begun
// now and ended by end; with tracing off they are stop and work as they
// are.
func (p Pool) traceHandle(stop, work context.Context, msg jetstream.Msg) (context.Context, context.Context, func()) {
	if p.Tracer == nil {
		return stop, work, noEnd
	}
	ctx, span := tracing.StartProcess(work, p.Tracer, p.Name, msg.Subject(), msg.Headers())
	return trace.ContextWithSpan(stop, span), ctx, func() { span.End() }
}

func noEnd() {}
