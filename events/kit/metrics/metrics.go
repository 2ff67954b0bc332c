// Package metrics is stkgate's Prometheus instrumentation: one Registry per
// service (never the global default one), holding every series stkgate
// exports (docs/METRICS.md lists them), and the admin HTTP server that
// serves /metrics, /healthz and /readyz.
//
// A nil *Registry means metrics are off: every method of a nil Registry
// returns at once, so an instrumented call costs one nil check. Components
// take an optional Metrics *Registry field; nil leaves them as they were.
package metrics

import (
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every stkgate series.
const Namespace = "stkgate"

// Registry holds one service's series.
type Registry struct {
	reg   *prometheus.Registry
	wrap  prometheus.Registerer // adds the service label
	names []string
	ready readiness
	// consumers are the watched consumers (WatchConsumers).
	consumers *consumerCollector

	httpRequests *prometheus.CounterVec
	httpSeconds  *prometheus.HistogramVec
	// httpSeries holds the series of each httpKey seen: looked up in the
	// vectors, each request hashed and compared its labels twice. Its
	// keys are as bounded as the labels (route templates, methodLabel,
	// codes).
	httpSeries    sync.Map // httpKey → *httpPair
	published     *prometheus.CounterVec
	consumed      *prometheus.CounterVec
	darajaReqs    *prometheus.CounterVec
	darajaSeconds *prometheus.HistogramVec
	oauthRefresh  *prometheus.CounterVec
	batchSize     prometheus.Histogram
	projectorLag  prometheus.Histogram
	payments      *prometheus.CounterVec
	timeToFinal   prometheus.Histogram
	deadLetters   *prometheus.CounterVec
	refusals      *prometheus.CounterVec
	whAttempts    *prometheus.CounterVec
	whSeconds     prometheus.Histogram
	whDeliveries  *prometheus.CounterVec
}

// Latency buckets, in seconds: an HTTP answer or a Daraja call (5 ms to
// 30 s), and a projection lag or a payment's time to final (10 ms to
// 15 min: a payment may wait for its customer's PIN, then for a query).
var (
	latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	lagBuckets     = []float64{.01, .05, .1, .5, 1, 5, 15, 30, 60, 120, 300, 900}
	batchBuckets   = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048}
)

// New is a Registry for the service name (the const label "service" of
// every series), with the Go runtime's and the process's collectors.
func New(service string) *Registry {
	r := &Registry{reg: prometheus.NewRegistry()}
	wrap := prometheus.WrapRegistererWith(prometheus.Labels{"service": service}, r.reg)
	r.wrap = wrap
	wrap.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	r.httpRequests = counterVec(r, wrap, "http_requests_total", "HTTP requests answered, by route template, method and status code.", "route", "method", "code")
	r.httpSeconds = histogramVec(r, wrap, "http_request_duration_seconds", "Time to answer an HTTP request, by route template and method.", latencyBuckets, "route", "method")
	r.published = counterVec(r, wrap, "events_published_total", "Events published to the STK stream, by event type and result (ok, duplicate, error).", "type", "result")
	r.consumed = counterVec(r, wrap, "events_consumed_total", "Messages a consumer settled, by consumer, event type and result (ack, nak, term, in_hand: handled without a settlement).", "consumer", "type", "result")
	r.darajaReqs = counterVec(r, wrap, "daraja_requests_total", "Calls to Daraja, by endpoint (oauth, stkpush, stkquery) and outcome (2xx, 4xx, 5xx, error).", "endpoint", "outcome")
	r.darajaSeconds = histogramVec(r, wrap, "daraja_request_duration_seconds", "Time Daraja took to answer, by endpoint.", latencyBuckets, "endpoint")
	r.oauthRefresh = counterVec(r, wrap, "daraja_oauth_refreshes_total", "OAuth access tokens fetched from Daraja, by result (ok, error).", "result")
	r.batchSize = histogram(r, wrap, "projector_batch_size", "Events applied to the read model in one transaction.", batchBuckets)
	r.projectorLag = histogram(r, wrap, "projector_lag_seconds", "Time from an event's publication to the commit of its projection.", lagBuckets)
	r.payments = counterVec(r, wrap, "payments_completed_total", "Payments brought to their final state, by status_label and by source (callback, query, dispatcher, …).", "status_label", "source")
	r.timeToFinal = histogram(r, wrap, "payment_time_to_final_seconds", "Time from a payment's request to its final state.", lagBuckets)
	r.deadLetters = counterVec(r, wrap, "dead_letters_total", "Messages a consumer gave up on, copied to STK_DLQ, by consumer and reason (max_deliveries, terminated).", "consumer", "reason")
	r.consumers = &consumerCollector{}
	wrap.MustRegister(r.consumers)
	r.refusals = counterVec(r, wrap, "rate_limit_refusals_total", "Requests refused by a limit, by limit (client_rate, auth_failures, phone_prompts, client_queued).", "limit")
	r.whAttempts = counterVec(r, wrap, "webhook_attempts_total", "Webhook delivery attempts, by outcome (2xx, 3xx, 4xx, 5xx, error: no answer).", "outcome")
	r.whSeconds = histogram(r, wrap, "webhook_attempt_duration_seconds", "Time a webhook attempt took, from the connection to the answer.", latencyBuckets)
	r.whDeliveries = counterVec(r, wrap, "webhook_deliveries_total", "Webhook deliveries ended, by result (delivered, failed: retries spent, cancelled: endpoint disabled or removed).", "result")
	return r
}

func counterVec(r *Registry, reg prometheus.Registerer, name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	reg.MustRegister(v)
	r.names = append(r.names, Namespace+"_"+name)
	return v
}

func histogramVec(r *Registry, reg prometheus.Registerer, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}, labels)
	reg.MustRegister(v)
	r.names = append(r.names, Namespace+"_"+name)
	return v
}

func histogram(r *Registry, reg prometheus.Registerer, name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets})
	reg.MustRegister(h)
	r.names = append(r.names, Namespace+"_"+name)
	return h
}

// Names are the names of every stkgate series a Registry exports, the
// scrape-time gauges (Consumers) included, sorted.
func Names() []string {
	names := slices.Clone(New("names").names)
	names = append(names, consumerGaugeNames()...)
	slices.Sort(names)
	return names
}

// Gatherer is what the registry exposes, for tests.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Handler serves the registry in the Prometheus exposition format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// HTTPRequest counts one HTTP request answered: route is its route
// template (never the raw path, whose ids would make a series each).
func (r *Registry) HTTPRequest(route, method string, code int, took time.Duration) {
	if r == nil {
		return
	}
	if codeText(code) == "other" {
		code = 0 // one key for every code out of range
	}
	k := httpKey{route: route, method: method, code: code}
	p, ok := r.httpSeries.Load(k)
	if !ok {
		p, _ = r.httpSeries.LoadOrStore(k, &httpPair{
			requests: r.httpRequests.WithLabelValues(route, method, codeText(code)),
			seconds:  r.httpSeconds.WithLabelValues(route, method),
		})
	}
	pair := p.(*httpPair)
	pair.requests.Inc()
	pair.seconds.Observe(took.Seconds())
}

// httpKey names the series of an HTTP request; httpPair are they.
type httpKey struct {
	route, method string
	code          int
}

type httpPair struct {
	requests prometheus.Counter
	seconds  prometheus.Observer
}

// Published counts one publish of an event of type typ; result is ok,
// duplicate (JetStream had it already) or error.
func (r *Registry) Published(typ, result string) {
	if r == nil {
		return
	}
	r.published.WithLabelValues(typ, result).Inc()
}

// Consumed counts one message of consumer settled with result (ack, nak,
// term, in_hand).
func (r *Registry) Consumed(consumer, typ, result string) {
	if r == nil {
		return
	}
	r.consumed.WithLabelValues(consumer, typ, result).Inc()
}

// DarajaRequest counts one call to Daraja's endpoint with its outcome.
func (r *Registry) DarajaRequest(endpoint, outcome string, took time.Duration) {
	if r == nil {
		return
	}
	r.darajaReqs.WithLabelValues(endpoint, outcome).Inc()
	r.darajaSeconds.WithLabelValues(endpoint).Observe(took.Seconds())
}

// OAuthRefresh counts one OAuth token fetch; result is ok or error.
func (r *Registry) OAuthRefresh(result string) {
	if r == nil {
		return
	}
	r.oauthRefresh.WithLabelValues(result).Inc()
}

// ProjectorBatch records one committed batch of n events, each published
// at a time in published.
func (r *Registry) ProjectorBatch(committed time.Time, published []time.Time) {
	if r == nil {
		return
	}
	r.batchSize.Observe(float64(len(published)))
	for _, t := range published {
		r.projectorLag.Observe(max(committed.Sub(t), 0).Seconds())
	}
}

// PaymentFinal counts one payment brought to its final state label by
// source, requested at requested (zero: unknown) and final at final.
func (r *Registry) PaymentFinal(label, source string, requested, final time.Time) {
	if r == nil {
		return
	}
	r.payments.WithLabelValues(label, source).Inc()
	if !requested.IsZero() {
		r.timeToFinal.Observe(max(final.Sub(requested), 0).Seconds())
	}
}

// DeadLetter counts one message consumer gave up on, for reason.
func (r *Registry) DeadLetter(consumer, reason string) {
	if r == nil {
		return
	}
	r.deadLetters.WithLabelValues(consumer, reason).Inc()
}

// Refused counts one request refused by limit.
func (r *Registry) Refused(limit string) {
	if r == nil {
		return
	}
	r.refusals.WithLabelValues(limit).Inc()
}

// WebhookAttempt counts one webhook attempt with its outcome and duration.
func (r *Registry) WebhookAttempt(outcome string, took time.Duration) {
	if r == nil {
		return
	}
	r.whAttempts.WithLabelValues(outcome).Inc()
	r.whSeconds.Observe(took.Seconds())
}

// WebhookDelivery counts one webhook delivery ended with result.
func (r *Registry) WebhookDelivery(result string) {
	if r == nil {
		return
	}
	r.whDeliveries.WithLabelValues(result).Inc()
}

// codeText is the status code as a label, from a small table so the hot
// path does not format it.
func codeText(code int) string {
	if code >= 100 && code < 600 {
		if s := codeTexts[code]; s != "" {
			return s
		}
	}
	return "other"
}

var codeTexts = func() map[int]string {
	m := map[int]string{}
	for c := 100; c < 600; c++ {
		if http.StatusText(c) != "" {
			m[c] = strconv.Itoa(c)
		}
	}
	return m
}()
