package daraja_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events/kit/metrics"
)

// TestMetricsCountCalls: with a Registry, each call to Daraja is counted
// by endpoint and outcome with its latency, and the one OAuth fetch the
// calls share as one refresh.
func TestMetricsCountCalls(t *testing.T) {
	reg := metrics.New("dispatcher")
	env := newFakeEnv(t, darajatest.Options{CallbackDelay: time.Hour}, func(c *daraja.Config) { c.Metrics = reg })
	ctx := testCtx(t)
	resp, err := env.client.Push(ctx, env.push("254712341032", "m1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.client.Query(ctx, resp.CheckoutRequestID); !errors.Is(err, daraja.ErrStillProcessing) {
		t.Fatalf("query of an open prompt: %v", err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"stkgate_daraja_requests_total", []string{"endpoint", "oauth", "outcome", "2xx"}, 1},
		{"stkgate_daraja_requests_total", []string{"endpoint", "stkpush", "outcome", "2xx"}, 1},
		{"stkgate_daraja_requests_total", []string{"endpoint", "stkquery"}, 1},
		{"stkgate_daraja_request_duration_seconds", []string{"endpoint", "stkpush"}, 1},
		{"stkgate_daraja_oauth_refreshes_total", []string{"result", "ok"}, 1},
	} {
		if got := reg.Value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
