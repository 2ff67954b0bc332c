package daraja

import (
	"net/http"
	"time"

	"github.com/stkgate/stkgate/events/kit/metrics"
)

// Endpoint names of the metrics, by path.
var endpoints = map[string]string{
	PathOAuth: "oauth",
	PathPush:  "stkpush",
	PathQuery: "stkquery",
}

// instrumented is hc with its transport counting each call to Daraja in
// reg: by endpoint and outcome (the status class, or "error" when no
// answer came), with its latency, and each OAuth token fetch.
func instrumented(hc *http.Client, reg *metrics.Registry) *http.Client {
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c := *hc
	c.Transport = countingTransport{next: next, reg: reg}
	return &c
}

type countingTransport struct {
	next http.RoundTripper
	reg  *metrics.Registry
}

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	endpoint, ok := endpoints[req.URL.Path]
	if !ok {
		endpoint = "other"
	}
	outcome := "error"
	if err == nil {
		outcome = statusClass(resp.StatusCode)
	}
	t.reg.DarajaRequest(endpoint, outcome, time.Since(start))
	if endpoint == "oauth" {
		result := "error"
		if outcome == "2xx" {
			result = "ok"
		}
		t.reg.OAuthRefresh(result)
	}
	return resp, err
}

func statusClass(code int) string {
	switch {
	case code >= 200 && code < 300:
		return "2xx"
	case code >= 400 && code < 500:
		return "4xx"
	case code >= 500 && code < 600:
		return "5xx"
	default:
		return "other"
	}
}
