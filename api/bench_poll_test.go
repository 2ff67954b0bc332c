package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/service"
)

// BenchmarkPollLogged polls one projected record as the binary serves it:
// metrics on, every line (the access line too) formatted as JSON by the
// services' logger (service.NewLogger), here to io.Discard. Its allocations per poll are the steady figure; the time
// moves with the machine's load.
func BenchmarkPollLogged(b *testing.B) {
	log := service.NewLogger(io.Discard, "", "api")
	e := newTestEnv(b, func(o *Options) { o.Logger, o.Metrics = log, metrics.New("api") })
	id := uuid.Must(uuid.NewV7()).String()
	e.apply(b, events.Requested{Payment: payment(id, "acme")})
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, newRequest(http.MethodGet, RecordPath+id, acmeToken, "", ""))
			if rec.Code != http.StatusOK {
				b.Errorf("status %d: %s", rec.Code, rec.Body)
				return
			}
		}
	})
}

// BenchmarkCreateLogged accepts requests as the binary does: metrics on,
// every line formatted as JSON by the services' logger (to io.Discard).
func BenchmarkCreateLogged(b *testing.B) {
	log := service.NewLogger(io.Discard, "", "api")
	benchmarkCreate(b, func(o *Options) { o.Logger, o.Metrics = log, metrics.New("api") })
}
