package devstack_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/events/testkit/servertest"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// TestMetricsMoveEndToEnd: with an admin address for each service, two
// payments through the whole stack (one paid, one cancelled, each told by
// its callback) move every service's series, and each service answers
// /healthz and /readyz.
func TestMetricsMoveEndToEnd(t *testing.T) {
	t.Parallel()
	addrs := map[string]string{
		"API_METRICS_ADDR":        servertest.FreeAddr(t),
		"PROJECTOR_METRICS_ADDR":  servertest.FreeAddr(t),
		"DISPATCHER_METRICS_ADDR": servertest.FreeAddr(t),
		"CALLBACK_METRICS_ADDR":   servertest.FreeAddr(t),
	}
	s := startStack(t, addrs)
	paid := s.accept(t, "0712345678")
	cancelled := s.accept(t, "0712341032")
	s.waitFinal(t, paid)
	s.waitFinal(t, cancelled)

	for setting, series := range map[string][]string{
		"API_METRICS_ADDR": {
			`stkgate_http_requests_total{code="202",method="POST",route="/api/stk-push"`,
			`stkgate_http_requests_total{code="200",method="GET",route="/api/stk-push/:tracking_id"`,
			`stkgate_http_request_duration_seconds_count{method="POST",route="/api/stk-push"`,
			`stkgate_events_published_total{result="ok",service="api",type="stk.requested"} 2`,
		},
		"PROJECTOR_METRICS_ADDR": {
			`stkgate_projector_batch_size_count{service="projector"}`,
			`stkgate_projector_lag_seconds_count{service="projector"}`,
			`stkgate_events_consumed_total{consumer="projector",result="ack",service="projector",type="stk.completed"} 2`,
			`?stkgate_consumer_pending_messages{consumer="projector",service="projector"}`,
		},
		"DISPATCHER_METRICS_ADDR": {
			`stkgate_daraja_requests_total{endpoint="stkpush",outcome="2xx",service="dispatcher"} 2`,
			`stkgate_daraja_request_duration_seconds_count{endpoint="stkpush",service="dispatcher"} 2`,
			`stkgate_daraja_oauth_refreshes_total{result="ok",service="dispatcher"}`,
			`stkgate_events_published_total{result="ok",service="dispatcher",type="stk.dispatched"} 2`,
			`stkgate_events_consumed_total{consumer="dispatcher",result="ack",service="dispatcher",type="stk.requested"} 2`,
			`?stkgate_reconciler_backlog_payments{reason="awaiting_outcome",service="dispatcher"}`,
			`?stkgate_consumer_redelivered_messages{consumer="dispatcher",service="dispatcher"}`,
		},
		"CALLBACK_METRICS_ADDR": {
			`stkgate_http_requests_total{code="200",method="POST",route="/hooks/stk-push/*"`,
			`stkgate_payments_completed_total{service="callback-ingest",source="callback",status_label="Success"} 1`,
			`stkgate_payments_completed_total{service="callback-ingest",source="callback",status_label="Cancelled by User"} 1`,
			`stkgate_payment_time_to_final_seconds_count{service="callback-ingest"} 2`,
		},
	} {
		base := "http://" + addrs[setting]
		for _, want := range series {
			wait.For(t, setting+" to export "+want, func() bool {
				return moved(scrapeText(t, base+"/metrics"), want)
			})
		}
		for _, path := range []string{"/healthz", "/readyz"} {
			if code := getStatus(t, base+path); code != http.StatusOK {
				t.Errorf("%s%s = %d, want 200", setting, path, code)
			}
		}
	}
}

// moved reports whether the exposition has a sample starting with want
// (a name and labels, and maybe its value) whose value is above zero; a
// want starting with "?" (a gauge, which may be zero) need only be there.
func moved(text, want string) bool {
	want, gauge := strings.CutPrefix(want, "?")
	for line := range strings.Lines(text) {
		if !strings.HasPrefix(line, want) {
			continue
		}
		if gauge {
			return true
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil && v > 0 {
			return true
		}
	}
	return false
}

func scrapeText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
