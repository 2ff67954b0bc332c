package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/logtest"
	"github.com/stkgate/stkgate/events/testkit/natsserver"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

var showLogs = flag.Bool("logs", false, "print the dispatcher's logs of every test")

const (
	consumerKey    = "dispatcher-test-key"
	consumerSecret = "dispatcher-test-secret-9f8e7d"
	passKey        = "dispatcher-test-passkey-1a2b3c"
	callbackBase   = "https://callbacks.example.test/stkgate/"
	callbackSecret = "dispatcher-test-callback-secret-0123456789"
)

// harness runs the dispatcher against an embedded JetStream and the fake
// Daraja, behind a proxy that records every push as it arrives.
type harness struct {
	t     *testing.T
	ns    *natstest.Server
	fake  *darajatest.Server
	proxy *pushProxy
	logs  *logtest.Buffer
	cfg   Config

	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T, tune func(*Config)) *harness {
	t.Helper()
	ns := natstest.Start(t)
	fake, err := darajatest.NewServer(darajatest.Options{
		ConsumerKey:    consumerKey,
		ConsumerSecret: consumerSecret,
		PassKey:        passKey,
		CallbackDelay:  time.Hour, // no callback during a test: none is needed
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	proxy := newPushProxy(t, fake.URL())
	logs := &logtest.Buffer{}
	cfg := Config{
		NATSURL:        ns.URL,
		StreamReplicas: 1,
		Daraja: daraja.Config{
			BaseURL:         proxy.URL(),
			ConsumerKey:     consumerKey,
			ConsumerSecret:  consumerSecret,
			ShortCode:       darajatest.DefaultShortCode,
			PassKey:         passKey,
			TransactionType: TransactionPayBill,
			PartyB:          darajatest.DefaultShortCode,
		},
		CallbackBaseURL:      callbackBase,
		CallbackSecrets:      testSecrets,
		Concurrency:          4,
		RetryMaxElapsed:      5 * time.Second,
		RetryInitialInterval: 20 * time.Millisecond,
		LockedWait:           300 * time.Millisecond,
		ShutdownTimeout:      10 * time.Second,
		ProgressInterval:     100 * time.Millisecond,
		RecheckDelay:         100 * time.Millisecond,
		PhoneWait:            50 * time.Millisecond,
		Logger:               slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if tune != nil {
		tune(&cfg)
	}
	h := &harness{t: t, ns: ns, fake: fake, proxy: proxy, logs: logs, cfg: cfg}
	t.Cleanup(func() {
		if h.done != nil {
			h.stop()
		}
		h.checkLogs()
		if *showLogs || t.Failed() {
			t.Logf("dispatcher logs:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- Run(ctx, h.cfg) }()
}

// stop cancels Run and waits for it to return.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run returned %v, want nil", err)
		}
	case <-time.After(h.cfg.ShutdownTimeout + 10*time.Second):
		h.t.Fatal("Run did not return after cancel")
	}
	h.done = nil
}

// phoneSeq starts past the numbers whose last four digits choose a failing
// outcome in the fake (0001).
var phoneSeq = struct {
	sync.Mutex
	n int
}{n: 100}

// newPayment is a payment to a phone no other test uses: the fake locks a
// phone while its prompt is open. Each is of a client of its own, so that no
// client's share of the workers holds it back (TestOneClientCannotStarveAnother
// sets clients).
func newPayment() events.Payment {
	phoneSeq.Lock()
	phoneSeq.n++
	n := phoneSeq.n
	phoneSeq.Unlock()
	return events.Payment{
		TrackingID:  uuid.NewString(),
		Client:      fmt.Sprintf("client-%04d", n),
		Phone:       fmt.Sprintf("25470000%04d", n),
		Amount:      1500,
		Reference:   "INV-2024-001",
		Tag:         "loan-repayment",
		RequestedAt: time.Now().UTC().Truncate(time.Second),
	}
}

// request publishes stk.requested for p, as the api does.
func (h *harness) request(p events.Payment) {
	h.t.Helper()
	pub := events.Publisher{JS: h.ns.JS, Source: "stkgate/api"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pub.Publish(ctx, events.Requested{Payment: p}); err != nil {
		h.t.Fatal(err)
	}
}

// waitSettled waits until the dispatcher consumer has every message of the
// stream acknowledged (or terminated) and nothing in flight.
func (h *harness) waitSettled() {
	h.t.Helper()
	// Longer than the consumer's AckWait (30 s), after which a message
	// handed to a pull that went nowhere (a consumer deleted and created
	// again under a loaded machine) comes back: a CI run at load average
	// 25 saw one come back as a 30 s wait ran out.
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := h.consumerInfo(ctx)
		cancel()
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 &&
			info.AckFloor.Stream == info.Delivered.Stream {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("dispatcher consumer not settled: %+v, %v", info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) consumerInfo(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	cons, err := h.ns.JS.Consumer(ctx, events.StreamName, events.ConsumerDispatcher)
	if err != nil {
		return nil, err
	}
	return cons.Info(ctx)
}

// stored reads back every event stored for a tracking id, by type.
func (h *harness) stored(trackingID string) map[string][]events.Event {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := h.ns.JS.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"stk.*." + trackingID},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string][]events.Event{}
	left := int(info.NumPending)
	for left > 0 {
		batch, err := cons.Fetch(left, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			h.t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			env, ev, err := events.Decode(msg.Data())
			if err != nil {
				h.t.Fatalf("stored event on %s: %v", msg.Subject(), err)
			}
			if want := events.Subject(env.Type, trackingID); msg.Subject() != want {
				h.t.Errorf("event %s stored on %s", env.Type, msg.Subject())
			}
			if env.Type != events.TypeRequested && env.Source != Source {
				h.t.Errorf("event %s has source %q, want %q", env.Type, env.Source, Source)
			}
			out[env.Type] = append(out[env.Type], ev)
		}
		if err := batch.Error(); err != nil {
			h.t.Fatal(err)
		}
		if n == 0 {
			h.t.Fatalf("stored events: %d pending but none fetched", left)
		}
		left -= n
	}
	return out
}

// checkLogs holds every test to the logging rules: no secret, no full
// phone number, and a tracking_id on every line about a payment.
func (h *harness) checkLogs() {
	h.t.Helper()
	raw := h.logs.String()
	for _, secret := range []string{consumerSecret, passKey, consumerKey} {
		if strings.Contains(raw, secret) {
			h.t.Errorf("logs contain the secret %q", secret)
		}
	}
	if strings.Contains(raw, "Bearer") || strings.Contains(raw, "access_token") {
		h.t.Errorf("logs contain a token")
	}
	for _, p := range h.fake.Pushes() {
		if strings.Contains(raw, p.Body.PhoneNumber) {
			h.t.Errorf("logs contain the full phone %s", p.Body.PhoneNumber)
		}
	}
	serviceLines := map[string]bool{
		"dispatcher started": true, "dispatcher stopped": true,
		"dispatcher set-up failed; retrying": true,
		"nats disconnected":                  true, "nats reconnected": true, "nats connected": true, "nats unreachable, retrying": true,
		// worker.Pool's, about a consumer.
		"fetch failed; retrying": true, "handlers still running at the shutdown timeout; cancelling their work": true,
		"hand back on stop failed: the message comes back after its ack wait": true,
		"consumer was deleted: created again":                                 true, "consumer deleted and not created again yet; retrying": true,
	}
	for _, line := range strings.Split(strings.TrimSpace(raw), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			h.t.Errorf("log line is not JSON: %s", line)
			continue
		}
		if msg, _ := rec["msg"].(string); !serviceLines[msg] {
			if id, _ := rec["tracking_id"].(string); id == "" {
				h.t.Errorf("log line without tracking_id: %s", line)
			}
		}
	}
}

// logLines returns the log records with the given message.
func (h *harness) logLines(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// pushProxy stands between the client and the fake Daraja. It records each
// push as it arrives, counts the pushes in flight, and can hold them: with
// gate set, a push waits until gate returns true (or the request ends).
type pushProxy struct {
	srv     *httptest.Server
	closing chan struct{}

	mu          sync.Mutex
	seen        int // pushes that arrived
	inFlight    int
	maxInFlight int
	gate        func(inFlight int) bool
	delay       time.Duration // every push is held this long first
	// hide503 pushes are passed on to the fake, which processes them, and
	// then answered 503 with a gateway page: the gateway failed after
	// Daraja had prompted the customer.
	hide503 int
}

func newPushProxy(t *testing.T, target string) *pushProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &pushProxy{closing: make(chan struct{})}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != daraja.PathPush {
			rp.ServeHTTP(w, r)
			return
		}
		// Reading the whole body lets the server notice a client that hangs
		// up, which cancels r.Context().
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		p.mu.Lock()
		p.seen++
		p.inFlight++
		p.maxInFlight = max(p.maxInFlight, p.inFlight)
		delay := p.delay
		p.mu.Unlock()
		defer func() {
			p.mu.Lock()
			p.inFlight--
			p.mu.Unlock()
		}()

		if delay > 0 {
			select {
			case <-r.Context().Done():
				return
			case <-p.closing:
				return
			case <-time.After(delay):
			}
		}
		for {
			p.mu.Lock()
			open := p.gate == nil || p.gate(p.inFlight)
			p.mu.Unlock()
			if open {
				break
			}
			select {
			case <-r.Context().Done():
				return
			case <-p.closing:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		p.mu.Lock()
		hide := p.hide503 > 0
		if hide {
			p.hide503--
		}
		p.mu.Unlock()
		if hide {
			rp.ServeHTTP(httptest.NewRecorder(), r)
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "<html><body><h1>503 Service Unavailable</h1></body></html>")
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		close(p.closing)
		p.srv.Close()
	})
	return p
}

func (p *pushProxy) URL() string { return p.srv.URL }

// hideAnswers makes the next n pushes processed by the fake but answered
// 503 by the proxy.
func (p *pushProxy) hideAnswers(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hide503 = n
}

func (p *pushProxy) setGate(g func(inFlight int) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate = g
}

func (p *pushProxy) setDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// arrived is how many pushes reached the proxy, answered or not yet.
func (p *pushProxy) arrived() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}

func (p *pushProxy) peak() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxInFlight
}

// fakePushes are the pushes the fake Daraja received for phone.
func (h *harness) fakePushes(phone string) []darajatest.Push {
	var out []darajatest.Push
	for _, p := range h.fake.Pushes() {
		if p.Body.PhoneNumber == phone {
			out = append(out, p)
		}
	}
	return out
}

var ignoreTimes = cmpopts.IgnoreFields(events.Completed{}, "CompletedAt")

func TestAcceptedPushIsDispatchedOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	p := newPayment()
	h.request(p)
	h.start()
	h.waitSettled()
	h.stop()

	got := h.stored(p.TrackingID)
	if n := len(got[events.TypeCompleted]); n != 0 {
		t.Errorf("%d stk.completed, want none before the callback", n)
	}
	if n := len(got[events.TypeDispatched]); n != 1 {
		t.Fatalf("%d stk.dispatched, want 1", n)
	}
	d := got[events.TypeDispatched][0].(events.Dispatched)
	if diff := cmp.Diff(p, d.Payment); diff != "" {
		t.Errorf("dispatched payment (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(d.CheckoutRequestID, "ws_CO_") || d.MerchantRequestID == "" {
		t.Errorf("dispatched ids = %q, %q", d.MerchantRequestID, d.CheckoutRequestID)
	}
	if d.ResponseDescription == "" || d.CustomerMessage == "" {
		t.Errorf("dispatched lacks Daraja's descriptions: %+v", d)
	}

	fp := h.fakePushes(p.Phone)
	if len(fp) != 1 {
		t.Fatalf("fake Daraja saw %d pushes, want 1", len(fp))
	}
	// The token is the tracking id's under CALLBACK_SECRET, as a path
	// segment: callback-ingest refuses to apply a callback without it.
	prefix := "https://callbacks.example.test/stkgate/hooks/stk-push/" + p.TrackingID + "/"
	if tok, ok := strings.CutPrefix(fp[0].Body.CallBackURL, prefix); !ok || !testSecrets.Verify(p.TrackingID, tok) {
		t.Errorf("CallBackURL = %q, want %s<a token of the tracking id>", fp[0].Body.CallBackURL, prefix)
	}
	if !fp[0].Accepted || fp[0].CheckoutRequestID != d.CheckoutRequestID || fp[0].MerchantRequestID != d.MerchantRequestID {
		t.Errorf("fake accepted %q/%q, dispatched says %q/%q",
			fp[0].MerchantRequestID, fp[0].CheckoutRequestID, d.MerchantRequestID, d.CheckoutRequestID)
	}
	wantBody := darajatest.PushBody{
		BusinessShortCode: "174379",
		TransactionType:   TransactionPayBill,
		Amount:            "1500",
		PartyA:            p.Phone,
		PartyB:            "174379",
		PhoneNumber:       p.Phone,
		CallBackURL:       callbackURL(p.TrackingID),
		AccountReference:  p.Reference,
		TransactionDesc:   TransactionDesc,
	}
	if diff := cmp.Diff(wantBody, fp[0].Body, cmpopts.IgnoreFields(darajatest.PushBody{}, "Password", "Timestamp")); diff != "" {
		t.Errorf("push body (-want +got):\n%s", diff)
	}
}

func TestRefusedPushCompletesFailed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	p := newPayment()
	h.fake.Script(p.Phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailInvalidPhone}})
	h.request(p)
	h.start()
	h.waitSettled()
	h.stop()

	got := h.stored(p.TrackingID)
	if n := len(got[events.TypeDispatched]); n != 0 {
		t.Errorf("%d stk.dispatched, want none", n)
	}
	if n := len(got[events.TypeCompleted]); n != 1 {
		t.Fatalf("%d stk.completed, want 1", n)
	}
	want := events.Completed{
		Payment:    p,
		ResultCode: "400.002.02",
		ResultDesc: "Bad Request - Invalid PhoneNumber",
		Source:     events.SourceDispatcher,
	}
	c := got[events.TypeCompleted][0].(events.Completed)
	if diff := cmp.Diff(want, c, ignoreTimes); diff != "" {
		t.Errorf("completed (-want +got):\n%s", diff)
	}
	if c.CompletedAt.IsZero() {
		t.Error("completed_at is zero")
	}
	if status, label := events.Outcome(c.ResultCode); status != events.StatusFinal || label != events.LabelFailed {
		t.Errorf("outcome %d %q, want final Failed", status, label)
	}
	if n := len(h.fakePushes(p.Phone)); n != 1 {
		t.Errorf("%d pushes, want exactly 1: a refusal is final", n)
	}
}

func TestSpikeArrestIsRetried(t *testing.T) {
	t.Parallel()
	// Daraja advises 2 s after each spike arrest: a budget with room to
	// spare on a loaded machine (the harness's 5 s was not).
	h := newHarness(t, func(c *Config) { c.RetryMaxElapsed = 30 * time.Second })
	p := newPayment()
	h.fake.Script(p.Phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailSpikeArrest, darajatest.FailSpikeArrest}})
	h.request(p)
	h.start()
	h.waitSettled()
	h.stop()

	got := h.stored(p.TrackingID)
	if n := len(got[events.TypeDispatched]); n != 1 {
		t.Errorf("%d stk.dispatched, want 1", n)
	}
	if n := len(got[events.TypeCompleted]); n != 0 {
		t.Errorf("%d stk.completed, want none", n)
	}
	if n := len(h.fakePushes(p.Phone)); n != 3 {
		t.Errorf("%d push attempts, want 3 (two refused by spike arrest, one accepted)", n)
	}
	if n := len(h.fake.AcceptedPushes(darajatest.WithCallbackURL(callbackURL(p.TrackingID)))); n != 1 {
		t.Errorf("fake accepted %d pushes, want 1", n)
	}
}

func TestLockedSubscriberWaitsThenRetries(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.LockedWait = 400 * time.Millisecond })
	p := newPayment()
	h.fake.Script(p.Phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailLocked}})
	h.request(p)
	h.start()
	h.waitSettled()
	h.stop()

	got := h.stored(p.TrackingID)
	if n := len(got[events.TypeDispatched]); n != 1 {
		t.Errorf("%d stk.dispatched, want 1", n)
	}
	pushes := h.fakePushes(p.Phone)
	if len(pushes) != 2 {
		t.Fatalf("%d push attempts, want 2", len(pushes))
	}
	// The open prompt must have had time to expire: the retry waits at least
	// LockedWait, whatever the backoff would have chosen.
	if gap := pushes[1].At.Sub(pushes[0].At); gap < h.cfg.LockedWait {
		t.Errorf("retried %v after the lock, want at least %v", gap, h.cfg.LockedWait)
	}
}

func TestTransientFailuresGiveUpAfterRetryMax(t *testing.T) {
	t.Parallel()
	// Daraja advises 2 s after a spike arrest: a budget just short of three
	// such waits has room for three attempts at most, and for two however
	// long the first took on a loaded machine (up to 3.95 s: a budget
	// short of two waits left room for a second attempt only if the first
	// took under 1.95 s, and a CI run at load average 20 saw one attempt).
	const most = 3
	h := newHarness(t, func(c *Config) { c.RetryMaxElapsed = most*daraja.RetryAfterSpikeArrest - 50*time.Millisecond })
	p := newPayment()
	h.fake.Script(p.Phone, darajatest.Script{FailFirst: repeat(darajatest.FailSpikeArrest, 100)})
	h.request(p)
	h.start()
	h.waitSettled()
	h.stop()

	got := h.stored(p.TrackingID)
	if n := len(got[events.TypeCompleted]); n != 1 {
		t.Fatalf("%d stk.completed, want 1", n)
	}
	pushes := h.fakePushes(p.Phone)
	if len(pushes) < 2 || len(pushes) > most {
		t.Errorf("%d attempts, want 2 to %d", len(pushes), most)
	}
	for i := 1; i < len(pushes); i++ {
		if gap := pushes[i].At.Sub(pushes[i-1].At); gap < daraja.RetryAfterSpikeArrest {
			t.Errorf("attempt %d came %v after the previous one, want at least Daraja's advised %v", i+1, gap, daraja.RetryAfterSpikeArrest)
		}
	}
	want := events.Completed{
		Payment:    p,
		ResultCode: daraja.CodeSpikeArrest,
		ResultDesc: fmt.Sprintf("Gave up after %d attempts: Error Occurred: Spike Arrest Violation", len(pushes)),
		Source:     events.SourceDispatcher,
	}
	if diff := cmp.Diff(want, got[events.TypeCompleted][0], ignoreTimes); diff != "" {
		t.Errorf("completed (-want +got):\n%s", diff)
	}
	if n := len(h.fake.AcceptedPushes()); n != 0 {
		t.Errorf("fake accepted %d pushes, want none", n)
	}
}

func TestUnreachableDarajaGivesUp(t *testing.T) {
	t.Parallel()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // nothing listens there any more: every dial is refused
	h := newHarness(t, func(c *Config) {
		// Long enough for several attempts 20 ms apart after a first that
		// took over a second on a loaded machine (CI saw one attempt in 1
		// s), or several at a load average of 20 and more.
		c.RetryMaxElapsed = 8 * time.Second
		c.Daraja.BaseURL = closed.URL
	})
	p := newPayment()
	h.request(p)
	h.start()
	h.waitSettled()
	h.stop()

	got := h.stored(p.TrackingID)
	if n := len(got[events.TypeCompleted]); n != 1 {
		t.Fatalf("%d stk.completed, want 1", n)
	}
	c := got[events.TypeCompleted][0].(events.Completed)
	if c.ResultCode != daraja.CodeUnreachable || c.Source != events.SourceDispatcher {
		t.Errorf("completed with %q from %q, want %q from the dispatcher", c.ResultCode, c.Source, daraja.CodeUnreachable)
	}
	var attempts int
	if _, err := fmt.Sscanf(c.ResultDesc, "Gave up after %d attempts: ", &attempts); err != nil || attempts < 2 {
		t.Errorf("result_desc %q: want several attempts given up", c.ResultDesc)
	}
	retries := h.logLines("push failed, retrying")
	if len(retries) != attempts-1 {
		t.Errorf("%d retries logged for %d attempts", len(retries), attempts)
	}
}

func repeat(f darajatest.Failure, n int) []darajatest.Failure {
	out := make([]darajatest.Failure, n)
	for i := range out {
		out[i] = f
	}
	return out
}

// heldAnswerTimeout is the Daraja client's timeout in tests whose fake
// holds a push's answer: short, so that they need not wait 30 s, and long
// enough that a push the fake answers is not taken for a held one on a
// loaded machine (a 300 ms one was, in a CI run at load average 20).
const heldAnswerTimeout = 2 * time.Second

func TestAmbiguousPushIsNeitherRetriedNorCompleted(t *testing.T) {
	t.Parallel()
	for _, f := range []darajatest.Failure{
		darajatest.FailTimeoutAfterAccept,
		darajatest.FailResetAfterAccept,
		darajatest.FailInternalAfterAccept,
		darajatest.FailInternal500_003_1001,
	} {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) { c.Daraja.Timeout = heldAnswerTimeout })
			// Straight to the fake: a proxy would turn a reset into a 502.
			h.cfg.Daraja.BaseURL = h.fake.URL()
			p := newPayment()
			h.fake.Script(p.Phone, darajatest.Script{FailFirst: []darajatest.Failure{f}})
			h.request(p)
			h.start()
			h.waitSettled()
			h.stop()

			got := h.stored(p.TrackingID)
			if n := len(got[events.TypeCompleted]) + len(got[events.TypeDispatched]); n != 0 {
				t.Errorf("%d events published, want none: only the callback or a query knows", n)
			}
			if n := len(h.fakePushes(p.Phone)); n != 1 {
				t.Errorf("%d push attempts, want exactly 1: another could charge twice", n)
			}
			if len(h.logLines("push outcome unknown: it may have reached the customer; not retrying, waiting for the callback")) != 1 {
				t.Errorf("no warning about the ambiguous push in the logs:\n%s", h.logs.String())
			}
		})
	}
}

func TestMalformedRequestsAreTerminated(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := context.Background()

	notRequested := newPayment()
	_, _, dispatchedBody, err := events.Encode("stkgate/api", events.Dispatched{Payment: notRequested}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	upper := newPayment()
	upper.TrackingID = strings.ToUpper(upper.TrackingID)
	_, _, upperBody, err := events.Encode("stkgate/api", events.Requested{Payment: upper}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other := newPayment()
	_, _, otherBody, err := events.Encode("stkgate/api", events.Requested{Payment: other}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct{ subject, body string }{
		{"stk.requested." + uuid.NewString(), "not json"},
		{"stk.requested." + uuid.NewString(), `{"specversion":"1.0","type":"stk.requested","subject":"x","data":{}}`},
		{"stk.requested." + notRequested.TrackingID, string(dispatchedBody)},
		{"stk.requested." + upper.TrackingID, string(upperBody)},
		{"stk.requested." + uuid.NewString(), string(otherBody)}, // subject and data disagree
	}
	for _, b := range bad {
		if _, err := h.ns.JS.Publish(ctx, b.subject, []byte(b.body)); err != nil {
			t.Fatal(err)
		}
	}
	good := newPayment()
	h.request(good)
	h.start()
	h.waitSettled()
	h.stop()

	if n := len(h.stored(good.TrackingID)[events.TypeDispatched]); n != 1 {
		t.Errorf("the request after the malformed ones: %d stk.dispatched, want 1", n)
	}
	if got := len(h.fake.Pushes()); got != 1 {
		t.Errorf("%d pushes, want only the good request's", got)
	}
	if n := len(h.logLines("terminating malformed request")); n != len(bad) {
		t.Errorf("%d malformed requests logged, want %d", n, len(bad))
	}
	info, err := h.consumerInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 {
		t.Errorf("%d redelivered: a malformed request must be terminated, not retried", info.NumRedelivered)
	}
}

func TestConcurrencyIsBounded(t *testing.T) {
	t.Parallel()
	const concurrency, requests = 3, 10
	h := newHarness(t, func(c *Config) { c.Concurrency = concurrency })
	// Hold the first pushes until as many as allowed are in flight, so the
	// bound is reached whenever the dispatcher allows it; then let every
	// push through. The deadline is a fallback only a fault reaches (fewer
	// workers than configured): it was 3 s from before the dispatcher's
	// start, and a loaded CI machine took 2.6 s to start it, so the gate
	// was open before the first push.
	var reached atomic.Bool
	deadline := time.Now().Add(wait.Timeout)
	h.proxy.setGate(func(inFlight int) bool {
		if inFlight >= concurrency {
			reached.Store(true)
		}
		return reached.Load() || time.Now().After(deadline)
	})
	var ps []events.Payment
	for range requests {
		p := newPayment()
		ps = append(ps, p)
		h.request(p)
	}
	h.start()
	h.waitSettled()
	h.stop()

	if peak := h.proxy.peak(); peak != concurrency {
		t.Errorf("at most %d pushes were in flight, want exactly %d", peak, concurrency)
	}
	for _, p := range ps {
		if n := len(h.stored(p.TrackingID)[events.TypeDispatched]); n != 1 {
			t.Errorf("%s: %d stk.dispatched, want 1", p.TrackingID, n)
		}
	}
	if n := len(h.fake.Pushes()); n != requests {
		t.Errorf("%d pushes, want %d", n, requests)
	}
}

func TestStopLetsInFlightPushFinish(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	release := make(chan struct{})
	h.proxy.setGate(func(int) bool {
		select {
		case <-release:
			return true
		default:
			return false
		}
	})
	p := newPayment()
	h.request(p)
	h.start()
	wait.For(t, "the push to be in flight", func() bool { return h.proxy.arrived() == 1 })

	h.cancel()
	select {
	case err := <-h.done:
		t.Fatalf("Run returned (%v) with a push in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	h.stop()

	// Run returned only after the outcome was durable and acknowledged.
	if n := len(h.stored(p.TrackingID)[events.TypeDispatched]); n != 1 {
		t.Errorf("%d stk.dispatched, want 1", n)
	}
	info, err := h.consumerInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("after stop: %d ack pending, %d pending, want 0", info.NumAckPending, info.NumPending)
	}
}

func TestStopCancelsPushAfterShutdownTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.ShutdownTimeout = 300 * time.Millisecond })
	h.proxy.setGate(func(int) bool { return false }) // Daraja never answers
	p := newPayment()
	h.request(p)
	h.start()
	wait.For(t, "the push to be in flight", func() bool { return h.proxy.arrived() == 1 })
	h.stop()

	// The request was written: it may have prompted the customer, so it is
	// not handed back for another push.
	info, err := h.consumerInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("after stop: %d ack pending, %d pending, want 0", info.NumAckPending, info.NumPending)
	}
	if n := len(h.stored(p.TrackingID)[events.TypeCompleted]); n != 0 {
		t.Errorf("%d stk.completed, want none", n)
	}
}

func TestStopBetweenAttemptsHandsRequestBack(t *testing.T) {
	t.Parallel()
	// The wait stays in the worker (deferAbove), so the stop meets it there.
	h := newHarness(t, func(c *Config) {
		c.LockedWait = time.Hour
		c.RetryMaxElapsed = 2 * time.Hour
		c.deferAbove = 3 * time.Hour
	})
	p := newPayment()
	h.fake.Script(p.Phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailLocked}})
	h.request(p)
	h.start()
	wait.For(t, "the locked push", func() bool { return h.proxy.arrived() == 1 })
	wait.For(t, "the retry to be scheduled", func() bool { return len(h.logLines("push failed, retrying")) == 1 })
	h.stop()

	if n := len(h.stored(p.TrackingID)); n != 1 {
		t.Errorf("events of %d types stored, want only the request", n)
	}

	// Nothing reached the customer, so the next dispatcher pushes it at once.
	h.cfg.LockedWait = time.Millisecond
	h.start()
	h.waitSettled()
	h.stop()
	if n := len(h.stored(p.TrackingID)[events.TypeDispatched]); n != 1 {
		t.Errorf("%d stk.dispatched after restart, want 1", n)
	}
	if n := len(h.fakePushes(p.Phone)); n != 2 {
		t.Errorf("%d push attempts, want 2", n)
	}
	if len(h.logLines("request redelivered after attempts that did not reach Daraja: pushing again")) != 1 {
		t.Error("the redelivery was not logged")
	}
	if rec := h.record(p.TrackingID); rec.State != events.AttemptAccepted || rec.Calls != 2 {
		t.Errorf("attempt record %+v, want accepted after 2 calls", rec)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	ctx := context.Background()
	if err := Run(ctx, Config{NATSURL: "nats://127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "CallbackBaseURL") {
		t.Errorf("Run without CallbackBaseURL: %v", err)
	}
	err := Run(ctx, Config{NATSURL: "nats://127.0.0.1:1", CallbackBaseURL: callbackBase})
	if err == nil || !strings.Contains(err.Error(), "CALLBACK_SECRET") {
		t.Errorf("Run without CallbackSecrets: %v", err)
	}
	err = Run(ctx, Config{NATSURL: "nats://127.0.0.1:1", CallbackBaseURL: callbackBase, CallbackSecrets: testSecrets})
	if err == nil || !strings.Contains(err.Error(), "daraja") {
		t.Errorf("Run without Daraja credentials: %v", err)
	}
}

// testSecrets sign the test pushes' callback tokens.
var testSecrets = func() events.CallbackSecrets {
	s, err := events.ParseCallbackSecrets(callbackSecret)
	if err != nil {
		panic(err)
	}
	return s
}()

// callbackURL is the CallBackURL the dispatcher gives Daraja for id.
func callbackURL(id string) string {
	return events.CallbackURL(callbackBase, id, testSecrets.Token(id))
}

// narrowStream makes the STK stream stop taking stk.dispatched and
// stk.completed, so that publishing an outcome fails as when JetStream is
// unavailable, while the requests can still be consumed and acknowledged.
func (h *harness) narrowStream() {
	h.t.Helper()
	cfg := events.StreamConfig(1)
	cfg.Subjects = []string{events.Subject(events.TypeRequested, "*")}
	if _, err := h.ns.JS.UpdateStream(context.Background(), cfg); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) restoreStream() {
	h.t.Helper()
	if _, err := events.EnsureStream(context.Background(), h.ns.JS, 1); err != nil {
		h.t.Fatal(err)
	}
}

// waitConsumer waits for the dispatcher to have set up every consumer:
// nats-server v2.15.2 races (its filestore's UpdateConfig against
// ConsumerStore, seen by the race detector) when a test updates the stream
// while a consumer of it is being created.
func (h *harness) waitConsumer() {
	h.t.Helper()
	wait.For(h.t, "the dispatcher set up", func() bool {
		_, err := h.consumerInfo(context.Background())
		return err == nil && len(h.logLines("dispatcher started")) > 0
	})
}

func TestPublishIsRetriedUntilStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.start()
	h.waitConsumer()
	h.narrowStream()
	p := newPayment()
	h.request(p)
	wait.For(t, "publish retries", func() bool { return len(h.logLines("publish failed, retrying")) >= 2 })
	h.restoreStream()
	h.waitSettled()
	h.stop()

	if n := len(h.stored(p.TrackingID)[events.TypeDispatched]); n != 1 {
		t.Errorf("%d stk.dispatched, want 1", n)
	}
	if n := len(h.fakePushes(p.Phone)); n != 1 {
		t.Errorf("%d pushes, want 1: a failed publish must not push again", n)
	}
}

func TestStartsBeforeNATS(t *testing.T) {
	t.Parallel()
	// A port that was free a moment ago, for a server started later.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()

	h := newHarness(t, nil)
	h.cfg.NATSURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	h.start()
	time.Sleep(500 * time.Millisecond) // Run is connecting to nothing meanwhile
	if len(h.logLines("dispatcher started")) != 0 {
		t.Fatal("started without NATS")
	}

	s, err := natsserver.Start(natsserver.Options{Port: port, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	wait.For(t, "the dispatcher to start", func() bool { return len(h.logLines("dispatcher started")) == 1 })

	// Requests published to the late server are dispatched.
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	p := newPayment()
	if _, err := (&events.Publisher{JS: js, Source: "stkgate/api"}).Publish(context.Background(), events.Requested{Payment: p}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the push", func() bool { return len(h.fake.AcceptedPushes()) == 1 })
	h.stop()
}
