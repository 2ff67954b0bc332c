package metrics_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	_ "github.com/lib/pq"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/ports"
	"github.com/stkgate/stkgate/events/testkit/natsserver"
	"github.com/stkgate/stkgate/events/testkit/pgserver"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// TestNilRegistryIsOff: every method of a nil Registry does nothing, and
// Consume hands back the message itself.
func TestNilRegistryIsOff(t *testing.T) {
	var r *metrics.Registry
	r.HTTPRequest("/x", "GET", 200, time.Millisecond)
	r.Published("stk.requested", "ok")
	r.Consumed("c", "stk.requested", "ack")
	r.DarajaRequest("stkpush", "2xx", time.Millisecond)
	r.OAuthRefresh("ok")
	r.ProjectorBatch(time.Now(), []time.Time{time.Now()})
	r.PaymentFinal("Success", "callback", time.Now(), time.Now())
	r.DeadLetter("dispatcher", "max_deliveries")
	r.Refused("client_rate")
	r.WebhookAttempt("2xx", time.Millisecond)
	r.WebhookDelivery("delivered")
	r.SetReadiness()
	r.WatchConsumers(nil)
	var msg jetstream.Msg
	got, done := r.Consume("c", msg)
	done()
	if got != msg {
		t.Error("a nil Registry's Consume wrapped the message")
	}
}

// TestEchoCountsByRouteTemplate: requests are counted by the route that
// matched, never by their path, with the status answered (an error's
// too), and a path no route matches is "unmatched".
func TestEchoCountsByRouteTemplate(t *testing.T) {
	r := metrics.New("test")
	e := echo.New()
	e.Use(r.Echo())
	e.GET("/api/stk-push/:tracking_id", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
	e.POST("/api/stk-push", func(c echo.Context) error { return echo.NewHTTPError(http.StatusTooManyRequests) })
	for _, req := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/api/stk-push/a1", nil),
		httptest.NewRequest(http.MethodGet, "/api/stk-push/b2", nil),
		httptest.NewRequest(http.MethodPost, "/api/stk-push", nil),
		httptest.NewRequest(http.MethodGet, "/no/such/path/c3", nil),
		// A method is the client's text too: one Go's server takes but
		// no route serves is "other", not a series of its own.
		httptest.NewRequest("D4", "/api/stk-push", nil),
		httptest.NewRequest("E5", "/api/stk-push", nil),
	} {
		e.ServeHTTP(httptest.NewRecorder(), req)
	}
	text := scrape(t, r)
	for _, want := range []string{
		`stkgate_http_requests_total{code="200",method="GET",route="/api/stk-push/:tracking_id",service="test"} 2`,
		`stkgate_http_requests_total{code="429",method="POST",route="/api/stk-push",service="test"} 1`,
		`stkgate_http_requests_total{code="404",method="GET",route="unmatched",service="test"} 1`,
		`stkgate_http_requests_total{code="405",method="other",route="/api/stk-push",service="test"} 2`,
		`stkgate_http_request_duration_seconds_count{method="GET",route="/api/stk-push/:tracking_id",service="test"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
	for _, raw := range []string{"a1", "b2", "c3", "D4", "E5"} {
		if strings.Contains(text, raw) {
			t.Errorf("exposition holds the raw path's %q", raw)
		}
	}
}

// TestConsumeCountsSettlement: a message is counted once, by its first
// settlement, under its event type; one left unsettled is in_hand.
func TestConsumeCountsSettlement(t *testing.T) {
	_, cons := streamOf(t, "stk.requested", 4, "c")
	batch, err := cons.FetchNoWait(4)
	if err != nil {
		t.Fatal(err)
	}
	r := metrics.New("test")
	settle := []func(jetstream.Msg){
		func(m jetstream.Msg) { _ = m.Ack(); _ = m.Nak() },
		func(m jetstream.Msg) { _ = m.NakWithDelay(time.Minute) },
		func(m jetstream.Msg) { _ = m.TermWithReason("bad") },
		func(jetstream.Msg) {},
	}
	i := 0
	for m := range batch.Messages() {
		msg, done := r.Consume("c", m)
		settle[i](msg)
		done()
		i++
	}
	if i != 4 {
		t.Fatalf("fetched %d messages, want 4", i)
	}
	text := scrape(t, r)
	for _, result := range []string{"ack", "nak", "term", "in_hand"} {
		want := `stkgate_events_consumed_total{consumer="c",result="` + result + `",service="test",type="stk.requested"} 1`
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}

// TestConsumerGauges: the pending and unacknowledged counts of a watched
// consumer are read from JetStream when scraped, and a reconciler
// consumer's make its backlog.
func TestConsumerGauges(t *testing.T) {
	js, cons := streamOf(t, "stk.dispatched", 3, "w")
	if _, err := cons.FetchNoWait(1); err != nil {
		t.Fatal(err)
	}
	r := metrics.New("test")
	r.WatchConsumers(js, metrics.Watch{Stream: "T", Consumer: "w", BacklogReason: "awaiting_outcome"}, metrics.Watch{Stream: "T", Consumer: "gone"})
	wait.For(t, "the fetched message to be unacknowledged", func() bool {
		return strings.Contains(scrape(t, r), `stkgate_consumer_ack_pending_messages{consumer="w",service="test"} 1`)
	})
	text := scrape(t, r)
	for _, want := range []string{
		`stkgate_consumer_pending_messages{consumer="w",service="test"} 2`,
		`stkgate_reconciler_backlog_payments{reason="awaiting_outcome",service="test"} 3`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
	if strings.Contains(text, `consumer="gone"`) {
		t.Error("a consumer that does not exist was exported")
	}
}

// TestReadiness: /readyz is 503 until the service set its checks, 200
// while NATS and Postgres answer, and 503 while either is down; /healthz
// answers throughout.
func TestReadiness(t *testing.T) {
	// A port below the ephemeral range, so that NATS can be started again
	// on it (ports.Free).
	natsPort, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	startNATS := func() *server.Server {
		ns, err := natsserver.Start(natsserver.Options{Port: natsPort, StoreDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		return ns
	}
	ns := startNATS()
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	parent, err := os.MkdirTemp("", "metrics-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil { // the server may run as another user
		t.Fatal(err)
	}
	pgDir := filepath.Join(parent, "pg")
	pg, err := pgserver.Start(context.Background(), pgserver.Options{DataDir: pgDir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	db, err := sql.Open("postgres", pg.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })

	r := metrics.New("test")
	srv := httptest.NewServer(r.AdminHandler())
	t.Cleanup(srv.Close)
	status := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	ready := func() bool { return status("/readyz") == http.StatusOK }
	notReady := func() bool { return status("/readyz") == http.StatusServiceUnavailable }

	if !notReady() {
		t.Error("/readyz ready before the service set its checks")
	}
	r.SetReadiness(metrics.NATSConnected(nc), metrics.PostgresAnswers(db))
	if !ready() {
		t.Error("/readyz not ready with NATS and Postgres up")
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	wait.For(t, "/readyz to say not ready while NATS is down", notReady)
	if got := status("/healthz"); got != http.StatusOK {
		t.Errorf("NATS down: /healthz %d, want 200", got)
	}
	startNATS()
	wait.For(t, "/readyz to say ready once NATS is back", ready)

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "/readyz to say not ready while Postgres is down", notReady)
	pg2, err := pgserver.Start(context.Background(), pgserver.Options{DataDir: pgDir, Port: pg.Port(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg2.Stop() })
	wait.For(t, "/readyz to say ready once Postgres is back", ready)
}

// TestRunServesAdmin: Run serves /metrics, /healthz and /readyz on its
// address while run runs, hands run the Registry, and stops with it; with
// no address, run gets a nil Registry.
func TestRunServesAdmin(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := metrics.Run(context.Background(), "", "test", log, func(_ context.Context, reg *metrics.Registry) error {
		if reg != nil {
			t.Error("no address, yet a Registry")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	err = metrics.Run(context.Background(), addr, "test", log, func(_ context.Context, reg *metrics.Registry) error {
		reg.Published("stk.requested", "ok")
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `stkgate_events_published_total{result="ok",service="test",type="stk.requested"} 1`) {
			t.Errorf("/metrics lacks the publish:\n%s", b)
		}
		return errors.New("run's own error")
	})
	if err == nil || err.Error() != "run's own error" {
		t.Errorf("Run returned %v, want run's error", err)
	}
}

// TestNames: Names lists the series a Registry exports, each once, all
// stkgate_ and following Prometheus's conventions for their kind.
func TestNames(t *testing.T) {
	names := metrics.Names()
	if len(names) < 15 {
		t.Fatalf("Names() = %v: too few", names)
	}
	for i, n := range names {
		if !strings.HasPrefix(n, "stkgate_") {
			t.Errorf("%s lacks the stkgate_ prefix", n)
		}
		if i > 0 && names[i-1] == n {
			t.Errorf("%s listed twice", n)
		}
	}
	r := metrics.New("test")
	r.Published("stk.requested", "ok")
	if !slices.Contains(names, "stkgate_events_published_total") {
		t.Error("Names lacks stkgate_events_published_total")
	}
	if n, err := testutil.GatherAndCount(r.Gatherer(), "stkgate_events_published_total"); err != nil || n != 1 {
		t.Errorf("gathered %d series of stkgate_events_published_total (%v), want 1", n, err)
	}
	problems, err := testutil.GatherAndLint(r.Gatherer())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "stkgate_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// streamOf is a JetStream holding stream T with n events of type typ, and
// the durable consumer of T named durable.
func streamOf(t *testing.T, typ string, n int, durable string) (jetstream.JetStream, jetstream.Consumer) {
	t.Helper()
	_, js := startNATS(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"stk.>"}}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := js.Publish(ctx, typ+"."+strconv.Itoa(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateConsumer(ctx, "T", jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	return js, cons
}

func startNATS(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := natsserver.Connect(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// scrape is r's exposition, as Prometheus reads it.
func scrape(t *testing.T, r *metrics.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics %d", rec.Code)
	}
	return rec.Body.String()
}

// TestWebhookSeries: webhook attempts by outcome with their duration, and
// deliveries by how they ended.
func TestWebhookSeries(t *testing.T) {
	r := metrics.New("test")
	r.WebhookAttempt("5xx", 30*time.Millisecond)
	r.WebhookAttempt("2xx", 10*time.Millisecond)
	r.WebhookDelivery("delivered")
	text := scrape(t, r)
	for _, want := range []string{
		`stkgate_webhook_attempts_total{outcome="5xx",service="test"} 1`,
		`stkgate_webhook_attempts_total{outcome="2xx",service="test"} 1`,
		`stkgate_webhook_attempt_duration_seconds_count{service="test"} 2`,
		`stkgate_webhook_deliveries_total{result="delivered",service="test"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}
