package api

import (
	"net/http"
	"testing"

	"github.com/stkgate/stkgate/events/kit/metrics"
)

// BenchmarkCreateMetrics is the accept path with metrics off (a nil
// Registry: no middleware, one nil check per count) and on, for
// docs/METRICS.md.
func BenchmarkCreateMetrics(b *testing.B) {
	b.Run("off", func(b *testing.B) { benchmarkCreate(b, func(*Options) {}) })
	b.Run("on", func(b *testing.B) { benchmarkCreate(b, func(o *Options) { o.Metrics = metrics.New("api") }) })
}

// TestMetricsCountAcceptsAndRefusals: with a Registry, an accepted
// request is counted by its route template and status and as a publish,
// and a request over the client's rate as a client_rate refusal; nothing
// names the raw path.
func TestMetricsCountAcceptsAndRefusals(t *testing.T) {
	t.Parallel()
	reg := metrics.New("api")
	e := newTestEnv(t, func(o *Options) { o.RateLimit, o.RateBurst, o.Metrics = 0.01, 1, reg })
	if r := e.post(t, acmeToken, phoneBody("0712000100", "M1")); r.status != http.StatusAccepted {
		t.Fatalf("first request: %d %s", r.status, r.raw)
	}
	if r := e.get(t, acmeToken, "0190a0b1-7c4e-7b8a-9c1d-2e3f4a5b6c7d"); r.status != http.StatusTooManyRequests {
		t.Fatalf("over the limit: %d %s", r.status, r.raw)
	}
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"stkgate_http_requests_total", []string{"code", "202", "method", "POST", "route", "/api/stk-push"}},
		{"stkgate_http_requests_total", []string{"code", "429", "method", "GET", "route", "/api/stk-push/:tracking_id"}},
		{"stkgate_events_published_total", []string{"result", "ok", "type", "stk.requested"}},
		{"stkgate_rate_limit_refusals_total", []string{"limit", "client_rate"}},
	} {
		if got := reg.Value(c.name, c.labels...); got != 1 {
			t.Errorf("%s%v = %v, want 1", c.name, c.labels, got)
		}
	}
}
