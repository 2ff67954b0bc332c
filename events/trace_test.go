package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/tracing"
	"github.com/stkgate/stkgate/events/kit/worker"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// TestTracePropagatesOverNATS: an event published inside a span carries the
// span's traceparent in its headers, and a Pool handling it runs its
// handler in a consumer span of the same trace, the child of the publish.
func TestTracePropagatesOverNATS(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	spans := tracetest.NewInMemoryExporter()
	tp, stop := tracing.Start(tracing.Config{ServiceName: "test", Exporter: spans}, nil)
	defer stop()
	tr := tracing.Tracer(tp)

	pub := &events.Publisher{JS: ns.JS, Source: "test", Tracer: tr}
	ev := events.Requested{Payment: events.Payment{TrackingID: "0192f0a1-aaaa-7bbb-8ccc-0000000000e1", Client: "acme", Phone: "254712345678", Amount: 10, Reference: "R1"}}
	pctx, parent := tr.Start(ctx, "test request")
	if _, err := pub.Publish(pctx, ev); err != nil {
		t.Fatal(err)
	}
	parent.End()

	cons, err := ns.Stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "trace_test", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan trace.SpanContext, 1)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		worker.Pool{Name: "trace_test", FetchWait: time.Second, Tracer: tr}.Run(runCtx, cons, func(_, work context.Context, msg jetstream.Msg) {
			_ = msg.Ack()
			select {
			case got <- trace.SpanContextFromContext(work):
			default:
			}
		})
	}()
	var handled trace.SpanContext
	wait.For(t, "the handler to run", func() bool {
		select {
		case handled = <-got:
			return true
		default:
			return false
		}
	})
	cancel()
	<-done

	if handled.TraceID() != parent.SpanContext().TraceID() {
		t.Fatalf("handler's trace %s, want the publisher's %s", handled.TraceID(), parent.SpanContext().TraceID())
	}
	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans.GetSpans() {
		byName[s.Name] = s
	}
	publish, process := byName["publish stk.requested"], byName["process stk.requested"]
	if publish.Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("publish span's parent %s, want the request's %s", publish.Parent.SpanID(), parent.SpanContext().SpanID())
	}
	if process.Parent.SpanID() != publish.SpanContext.SpanID() || !process.Parent.IsRemote() {
		t.Errorf("process span's parent %v, want the publish span %s, remote", process.Parent, publish.SpanContext.SpanID())
	}
	if process.SpanKind != trace.SpanKindConsumer || publish.SpanKind != trace.SpanKindProducer {
		t.Errorf("span kinds: publish %v, process %v", publish.SpanKind, process.SpanKind)
	}
}
