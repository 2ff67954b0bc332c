package devstack_test

import (
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/events/kit/tracing"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// TestOneTracePerPayment: one payment, from its POST to its projection,
// is one trace whose spans come from every service: the api's request, the
// dispatcher's handling and its call to Daraja, callback-ingest's
// callback (which carries no traceparent of its own) and the projector.
func TestOneTracePerPayment(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	s := startStackWith(t, nil, stackOptions{traces: spans})
	id := s.accept(t, "0712345678")
	s.waitFinal(t, id)

	// What each part of the trace is: a span of the service, found by
	// kind and name.
	parts := []struct {
		what, service string
		is            func(tracetest.SpanStub) bool
	}{
		{"the POST", "api", func(sp tracetest.SpanStub) bool {
			return sp.SpanKind == trace.SpanKindServer && sp.Name == "POST /api/stk-push"
		}},
		{"the dispatch", "dispatcher", func(sp tracetest.SpanStub) bool { return sp.Name == "process stk.requested" }},
		{"the Daraja push", "dispatcher", func(sp tracetest.SpanStub) bool {
			return sp.SpanKind == trace.SpanKindClient && strings.HasSuffix(sp.Name, "/mpesa/stkpush/v1/processrequest")
		}},
		{"the callback", "callback-ingest", func(sp tracetest.SpanStub) bool { return sp.SpanKind == trace.SpanKindServer }},
		{"the projection of stk.completed", "projector", func(sp tracetest.SpanStub) bool { return sp.Name == "process stk.completed" }},
	}
	var missing []string
	wait.For(t, "a span of every part of the payment's trace", func() bool {
		missing = missing[:0]
		got := spans.GetSpans()
		root := slices.IndexFunc(got, func(sp tracetest.SpanStub) bool { return parts[0].is(sp) && trackingID(sp) == id })
		if root < 0 {
			missing = append(missing, parts[0].what)
			return false
		}
		tid := got[root].SpanContext.TraceID()
		for _, p := range parts[1:] {
			if !slices.ContainsFunc(got, func(sp tracetest.SpanStub) bool {
				return sp.SpanContext.TraceID() == tid && serviceName(sp) == p.service && p.is(sp)
			}) {
				missing = append(missing, p.what)
			}
		}
		return len(missing) == 0
	})

	// And the payment has no other trace: every span naming it is in the
	// POST's, but the polls (GET), each a request, and a trace, of its own.
	var traces []trace.TraceID
	for _, sp := range spans.GetSpans() {
		if trackingID(sp) == id && !strings.HasPrefix(sp.Name, "GET ") && !slices.Contains(traces, sp.SpanContext.TraceID()) {
			traces = append(traces, sp.SpanContext.TraceID())
		}
	}
	if len(traces) != 1 {
		t.Errorf("the payment's spans are in %d traces, want 1: %v", len(traces), traces)
	}

}

func trackingID(sp tracetest.SpanStub) string {
	for _, a := range sp.Attributes {
		if a.Key == tracing.KeyTrackingID {
			return a.Value.AsString()
		}
	}
	return ""
}

func serviceName(sp tracetest.SpanStub) string {
	v, _ := sp.Resource.Set().Value(attribute.Key("service.name"))
	return v.AsString()
}
