package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/tracing"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

// TestPublishCountsOnce: a completion published twice (a callback racing a
// query) is one ok publish, one duplicate, and one payment by its
// status_label and source, its time to final measured from the request;
// counted the same with tracing on (its publish took another path, and
// counted nothing).
func TestPublishCountsOnce(t *testing.T) {
	ns := natstest.Start(t)
	for _, traced := range []bool{false, true} {
		t.Run(fmt.Sprintf("traced=%v", traced), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			reg := metrics.New("test")
			pub := &events.Publisher{JS: ns.JS, Source: "test", Metrics: reg}
			if traced {
				tp, stop := tracing.Start(tracing.Config{ServiceName: "test", Exporter: tracetest.NewInMemoryExporter()}, nil)
				defer stop()
				pub.Tracer = tracing.Tracer(tp)
			}
			requested := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
			ev := events.Completed{
				Payment:    events.Payment{TrackingID: uuid.NewString(), Client: "acme", Phone: "254712345678", Amount: 10, Reference: "R1", RequestedAt: requested},
				ResultCode: "1032", ResultDesc: "Request cancelled by user", Source: events.SourceCallback, CompletedAt: requested.Add(20 * time.Second),
			}
			for range 2 {
				if _, err := pub.Publish(ctx, ev); err != nil {
					t.Fatal(err)
				}
			}
			for _, c := range []struct {
				name   string
				labels []string
			}{
				{"stkgate_events_published_total", []string{"type", "stk.completed", "result", "ok"}},
				{"stkgate_events_published_total", []string{"type", "stk.completed", "result", "duplicate"}},
				{"stkgate_payments_completed_total", []string{"status_label", "Cancelled by User", "source", events.SourceCallback}},
				{"stkgate_payment_time_to_final_seconds", nil},
			} {
				if got := reg.Value(c.name, c.labels...); got != 1 {
					t.Errorf("%s%v = %v, want 1", c.name, c.labels, got)
				}
			}
		})
	}
}
