package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stkgate/stkgate/events/kit/metrics"
)

// BenchmarkRequestCost is what metrics add to one HTTP request of the
// api's shape (a route with a parameter, the middleware, a publish
// counted), against the same without a Registry, for docs/METRICS.md.
func BenchmarkRequestCost(b *testing.B) {
	for _, tc := range []struct {
		name string
		reg  *metrics.Registry
	}{{"off", nil}, {"on", metrics.New("bench")}} {
		b.Run(tc.name, func(b *testing.B) {
			e := echo.New()
			if tc.reg != nil {
				e.Use(tc.reg.Echo())
			}
			e.POST("/api/stk-push/:id", func(c echo.Context) error {
				tc.reg.Published("stk.requested", "ok")
				tc.reg.PaymentFinal("Success", "callback", time.Time{}, time.Time{})
				return c.NoContent(http.StatusAccepted)
			})
			req := httptest.NewRequest(http.MethodPost, "/api/stk-push/abc", nil)
			b.ReportAllocs()
			for b.Loop() {
				e.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}
