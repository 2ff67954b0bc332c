package api

import (
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

// TestServerSpanNamesThePayment: with tracing on, the server span of a
// POST and of a poll carries the payment's tracking id and the status,
// and the access lines their trace id.
func TestServerSpanNamesThePayment(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	tp, stop := tracing.Start(tracing.Config{ServiceName: "api", Exporter: spans}, nil)
	t.Cleanup(stop)
	e := newTestEnv(t, func(o *Options) { o.Tracer = tracing.Tracer(tp) })
	r := e.post(t, acmeToken, validBody)
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	id, _ := r.body["tracking_id"].(string)
	e.apply(t, events.Requested{Payment: payment(id, "acme")})
	if r := e.get(t, acmeToken, id); r.status != http.StatusOK {
		t.Fatalf("poll: %d %s", r.status, r.raw)
	}
	found := map[string]bool{}
	for _, sp := range spans.GetSpans() {
		var tid string
		var status int64
		for _, a := range sp.Attributes {
			switch a.Key {
			case tracing.KeyTrackingID:
				tid = a.Value.AsString()
			case "http.response.status_code":
				status = a.Value.AsInt64()
			}
		}
		if tid == id && status != 0 {
			found[sp.Name] = true
		}
	}
	for _, name := range []string{"POST " + PushPath, "GET " + RecordPath + ":tracking_id"} {
		if !found[name] {
			t.Errorf("no span %q with the tracking id and status among %d", name, len(spans.GetSpans()))
		}
	}
}
