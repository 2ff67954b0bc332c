package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/logtest"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

var showLogs = flag.Bool("logs", false, "print the reconciler's logs of every test")

const (
	consumerKey    = "reconciler-test-key"
	consumerSecret = "reconciler-test-secret-5c4d"
	passKey        = "reconciler-test-passkey-7e8f"
)

// harness runs reconcilers against an embedded JetStream and the fake
// Daraja. It plays the dispatcher (pushing through the real client, writing
// the attempt record, publishing stk.requested and stk.dispatched) and
// callback-ingest (turning the fake's callbacks into stk.completed).
type harness struct {
	t        *testing.T
	ns       *natstest.Server
	fake     *darajatest.Server
	client   *daraja.Client
	kv       jetstream.KeyValue
	pub      *events.Publisher
	callback *httptest.Server
	logs     *logtest.Buffer
	cfg      Config

	mu       sync.Mutex
	payments map[string]events.Payment
	runs     []*run
}

type run struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned
}

// fastConfig shortens every wait so a test takes a second or two.
func fastConfig(url string, d daraja.Config, logs *logtest.Buffer) Config {
	return Config{
		NATSURL:          url,
		StreamReplicas:   1,
		Daraja:           d,
		ReconcileAfter:   400 * time.Millisecond,
		UnknownDeadline:  1500 * time.Millisecond,
		RequestDeadline:  1500 * time.Millisecond,
		PromptLifetime:   time.Second,
		ReceiptWait:      time.Second,
		QueryInterval:    50 * time.Millisecond,
		QueryMaxInterval: 200 * time.Millisecond,
		Concurrency:      4,
		ProgressInterval: 100 * time.Millisecond,
		ShutdownTimeout:  5 * time.Second,
		Logger:           slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func newHarness(t *testing.T, tune func(*Config)) *harness {
	t.Helper()
	ns := natstest.Start(t)
	fake, err := darajatest.NewServer(darajatest.Options{
		ConsumerKey:    consumerKey,
		ConsumerSecret: consumerSecret,
		PassKey:        passKey,
		CallbackDelay:  50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	dcfg := daraja.Config{
		BaseURL:        fake.URL(),
		ConsumerKey:    consumerKey,
		ConsumerSecret: consumerSecret,
		ShortCode:      darajatest.DefaultShortCode,
		PassKey:        passKey,
		Timeout:        5 * time.Second,
	}
	client, err := daraja.New(dcfg)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := ns.JS.CreateKeyValue(context.Background(), events.AttemptsConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	h := &harness{
		t: t, ns: ns, fake: fake, client: client, kv: kv, logs: logs,
		pub:      &events.Publisher{JS: ns.JS, Source: "stkgate/test"},
		cfg:      fastConfig(ns.URL, dcfg, logs),
		payments: map[string]events.Payment{},
	}
	if tune != nil {
		tune(&h.cfg)
	}
	h.callback = httptest.NewServer(http.HandlerFunc(h.receiveCallback))
	t.Cleanup(h.callback.Close)
	t.Cleanup(func() {
		h.stopAll()
		if *showLogs || t.Failed() {
			t.Logf("reconciler logs:\n%s", h.logs.String())
		}
	})
	return h
}

// start runs one more reconciler instance.
func (h *harness) start() *run {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := Run(ctx, h.cfg); err != nil {
			h.t.Errorf("Run returned %v, want nil", err)
		}
	}()
	h.mu.Lock()
	h.runs = append(h.runs, r)
	h.mu.Unlock()
	return r
}

// stop cancels a Run and waits for it to return nil.
func (h *harness) stop(r *run) {
	h.t.Helper()
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(h.cfg.ShutdownTimeout + 10*time.Second):
		h.t.Fatal("Run did not return after cancel")
	}
}

func (h *harness) stopAll() {
	h.mu.Lock()
	runs := h.runs
	h.runs = nil
	h.mu.Unlock()
	for _, r := range runs {
		h.stop(r)
	}
}

var phoneSeq = struct {
	sync.Mutex
	n int
}{n: 100}

// newPayment is a payment to a phone no other payment uses: the fake locks a
// phone while its prompt is open.
func (h *harness) newPayment() events.Payment {
	phoneSeq.Lock()
	phoneSeq.n++
	n := phoneSeq.n
	phoneSeq.Unlock()
	p := events.Payment{
		TrackingID:  uuid.NewString(),
		Client:      "test",
		Phone:       fmt.Sprintf("2547%08d", 10000000+n*10+5),
		Amount:      1500,
		Reference:   "INV-1",
		RequestedAt: time.Now().UTC(),
	}
	h.mu.Lock()
	h.payments[p.TrackingID] = p
	h.mu.Unlock()
	return p
}

func (h *harness) publish(ev events.Event) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.pub.Publish(ctx, ev); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) putAttempt(a events.Attempt) {
	h.t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.kv.Put(context.Background(), a.TrackingID, b); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) getAttempt(id string) (events.Attempt, bool) {
	h.t.Helper()
	e, err := h.kv.Get(context.Background(), id)
	if err == jetstream.ErrKeyNotFound {
		return events.Attempt{}, false
	}
	if err != nil {
		h.t.Fatal(err)
	}
	var a events.Attempt
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		h.t.Fatal(err)
	}
	return a, true
}

// dispatch plays the dispatcher for a payment to phone scripted with sc:
// stk.requested, the attempt record, the push to the fake, stk.dispatched.
func (h *harness) dispatch(sc darajatest.Script) (events.Payment, daraja.PushResponse) {
	h.t.Helper()
	p, resp := h.pushWithoutDispatched(sc)
	h.publish(events.Dispatched{Payment: p, MerchantRequestID: resp.MerchantRequestID, CheckoutRequestID: resp.CheckoutRequestID,
		ResponseDescription: resp.ResponseDescription})
	return p, resp
}

// pushWithoutDispatched is dispatch stopped before stk.dispatched (the
// dispatcher stopped, or a callback came first): the attempt record holds
// Daraja's answer.
func (h *harness) pushWithoutDispatched(sc darajatest.Script) (events.Payment, daraja.PushResponse) {
	h.t.Helper()
	p := h.newPayment()
	h.fake.Script(p.Phone, sc)
	h.publish(events.Requested{Payment: p})
	sent := time.Now().UTC()
	h.putAttempt(events.Attempt{TrackingID: p.TrackingID, State: events.AttemptSending, Calls: 1, FirstSentAt: sent, UpdatedAt: sent})
	resp, err := h.client.Push(context.Background(), daraja.PushRequest{
		Phone:            p.Phone,
		Amount:           p.Amount,
		AccountReference: p.Reference,
		CallbackURL:      events.CallbackURL(h.callback.URL, p.TrackingID, ""),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.putAttempt(events.Attempt{TrackingID: p.TrackingID, State: events.AttemptAccepted, Calls: 1,
		MerchantRequestID: resp.MerchantRequestID, CheckoutRequestID: resp.CheckoutRequestID,
		FirstSentAt: sent, UpdatedAt: time.Now().UTC()})
	return p, resp
}

// receiveCallback is a minimal callback-ingest: the fake's callback becomes
// stk.completed with source "callback".
func (h *harness) receiveCallback(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, events.CallbackPath)
	var cb struct {
		Body struct {
			StkCallback struct {
				MerchantRequestID string
				CheckoutRequestID string
				ResultCode        json.Number
				ResultDesc        string
			} `json:"stkCallback"`
		}
	}
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	if err := dec.Decode(&cb); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	p, ok := h.payments[id]
	h.mu.Unlock()
	if !ok {
		http.Error(w, "unknown tracking id", http.StatusNotFound)
		return
	}
	c := cb.Body.StkCallback
	ev := events.Completed{Payment: p, ResultCode: c.ResultCode.String(), ResultDesc: c.ResultDesc, Source: events.SourceCallback,
		MerchantRequestID: c.MerchantRequestID, CheckoutRequestID: c.CheckoutRequestID, CompletedAt: time.Now().UTC()}
	if _, err := h.pub.Publish(r.Context(), ev); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write([]byte(`{"ResultCode":0,"ResultDesc":"Accepted"}`))
}

// completion waits for stk.completed of id and returns it with the time
// JetStream stored it.
func (h *harness) completion(id string, within time.Duration) (events.Completed, time.Time) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := h.ns.Stream.GetLastMsgForSubject(ctx, events.Subject(events.TypeCompleted, id))
		cancel()
		if err == nil {
			_, ev, err := events.Decode(m.Data)
			if err != nil {
				h.t.Fatal(err)
			}
			return ev.(events.Completed), m.Time
		}
		if err != jetstream.ErrMsgNotFound {
			h.t.Fatal(err)
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no stk.completed for %s within %s", id, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls cond until it holds, for at most wait.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// storedAt is when the event of type typ for id was stored.
func (h *harness) storedAt(typ, id string) time.Time {
	h.t.Helper()
	m, err := h.ns.Stream.GetLastMsgForSubject(context.Background(), events.Subject(typ, id))
	if err != nil {
		h.t.Fatal(err)
	}
	return m.Time
}

// completions counts the stk.completed messages stored for id.
func (h *harness) completions(id string) uint64 {
	h.t.Helper()
	subject := events.Subject(events.TypeCompleted, id)
	info, err := h.ns.Stream.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// settled waits until both reconciler consumers have acked every message:
// nothing is left for them to do.
func (h *harness) settled(within time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		idle, late := true, time.Now().After(deadline)
		for _, name := range []string{events.ConsumerReconcilerDispatched, events.ConsumerReconcilerRequested} {
			c, err := h.ns.JS.Consumer(context.Background(), events.StreamName, name)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				idle = false // not started yet
				break
			}
			if err != nil {
				h.t.Fatal(err)
			}
			info, err := c.Info(context.Background())
			if err != nil {
				h.t.Fatal(err)
			}
			if info.NumPending != 0 || info.NumAckPending != 0 {
				idle = false
				if late {
					h.t.Logf("consumer %s: pending %d, ack pending %d, redelivered %d", name, info.NumPending, info.NumAckPending, info.NumRedelivered)
				}
			}
		}
		if idle {
			return
		}
		if late {
			h.t.Fatalf("reconciler consumers still have work after %s", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// queriesFor is the fake's queries for one CheckoutRequestID.
func (h *harness) queriesFor(checkoutID string) []darajatest.Query {
	var out []darajatest.Query
	for _, q := range h.fake.Queries() {
		if q.CheckoutRequestID == checkoutID {
			out = append(out, q)
		}
	}
	return out
}
