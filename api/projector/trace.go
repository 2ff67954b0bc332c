package projector

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

// traceBatch starts a consumer span for each event of a batch, the child
// of the span that published it, and returns what ends them all: one
// transaction projects the whole batch, so each event's span covers it.
func (p *projector) traceBatch(items []item) (end func()) {
	if p.tracer == nil {
		return func() {}
	}
	spans := make([]trace.Span, len(items))
	for i, it := range items {
		_, spans[i] = tracing.StartProcess(context.Background(), p.tracer, events.ConsumerProjector, it.msg.Subject(), it.msg.Headers())
	}
	return func() {
		for _, s := range spans {
			s.End()
		}
	}
}
