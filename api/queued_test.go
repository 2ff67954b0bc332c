package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

// queuedEnv caps each client at max requests queued for the dispatcher,
// counted afresh on every request.
func queuedEnv(t testing.TB, maxQueued int) *testEnv {
	return newTestEnv(t, func(o *Options) { o.ClientMaxQueued, o.QueuedRefresh = maxQueued, time.Nanosecond })
}

// wantQueueFull checks the 429 of a client at its cap.
func wantQueueFull(t testing.TB, what string, r response) {
	t.Helper()
	if r.status != http.StatusTooManyRequests || r.body["success"] != false || r.body["message"] != MsgQueueFull {
		t.Fatalf("%s: %d %s, want 429 %q", what, r.status, r.raw, MsgQueueFull)
	}
	if ra := r.header.Get("Retry-After"); ra != fmt.Sprint(queuedRetryAfterSeconds) {
		t.Errorf("%s: Retry-After %q, want %d", what, ra, queuedRetryAfterSeconds)
	}
}

// projectRequested writes the stk.requested of ids into the read model, as
// the projector would, and returns their payments.
func (e *testEnv) projectRequested(t testing.TB, ids ...string) []events.Payment {
	t.Helper()
	var ps []events.Payment
	for _, id := range ids {
		_, req, _ := e.requested(t, id)
		e.apply(t, req)
		ps = append(ps, req.Payment)
	}
	return ps
}

// A client at its cap of queued requests is refused with 429 while other
// clients are accepted; an idempotent repeat of one of its accepted
// requests is still answered; once its requests are dispatched or
// finished it is accepted again. The count holds whether the requests are
// in the read model yet or not.
func TestClientQueuedCap(t *testing.T) {
	t.Parallel()
	const limit = 3
	e := queuedEnv(t, limit)

	// Not projected yet: counted by this instance alone.
	first := accepted(t, e.postKey(t, acmeToken, "order-1", phoneBody("0712000600", "Q0")))
	ids := []string{first}
	for i := 1; i < limit; i++ {
		ids = append(ids, accepted(t, e.post(t, acmeToken, phoneBody("0712000600", fmt.Sprint("Q", i)))))
	}
	wantQueueFull(t, "over the cap", e.post(t, acmeToken, phoneBody("0712000601", "over")))
	wantQueueFull(t, "over the cap with a new key", e.postKey(t, acmeToken, "order-2", phoneBody("0712000601", "over")))
	if _, held := e.keyRow(t, "acme", "order-2"); held {
		t.Error("the refused request's key is held")
	}
	if n := e.streamMsgs(t); n != limit {
		t.Errorf("stream holds %d requests, want %d", n, limit)
	}
	// The repeat of an accepted request is not a new one.
	r := e.postKey(t, acmeToken, "order-1", phoneBody("0712000600", "Q0"))
	if got := accepted(t, r); got != first || r.header.Get(ReplayedHeader) != "true" {
		t.Fatalf("idempotent repeat at the cap answered %s (replayed %q), want %s", got, r.header.Get(ReplayedHeader), first)
	}
	// Another client has its own cap.
	accepted(t, e.post(t, globexToken, phoneBody("0712000602", "G")))

	// Projected: counted from the read model, not twice.
	ps := e.projectRequested(t, ids...)
	wantQueueFull(t, "projected, still queued", e.post(t, acmeToken, phoneBody("0712000601", "over")))

	// One dispatched, one finished without a push: two places free.
	e.apply(t,
		events.Dispatched{Payment: ps[0], MerchantRequestID: "29115-1", CheckoutRequestID: "ws_CO_queued_1"},
		events.Completed{Payment: ps[1], ResultCode: "400.002.02", ResultDesc: "Bad Request - Invalid PhoneNumber",
			Source: events.SourceDispatcher, CompletedAt: fixedNow.Add(time.Second)},
	)
	accepted(t, e.post(t, acmeToken, phoneBody("0712000601", "after-1")))
	accepted(t, e.postKey(t, acmeToken, "order-2", phoneBody("0712000601", "over")))
	wantQueueFull(t, "at the cap again", e.post(t, acmeToken, phoneBody("0712000601", "over-2")))
	if !strings.Contains(e.logs.String(), "request refused: client at its cap of requests queued for the dispatcher") {
		t.Error("the refusal is not logged")
	}
}

// The cap holds across api instances: another instance counts the
// client's requests once the projector has written them.
func TestClientQueuedCapAcrossInstances(t *testing.T) {
	t.Parallel()
	const limit = 2
	e := queuedEnv(t, limit)
	other, err := NewHandler(Options{
		Conn: e.conn, JS: e.ns.JS, Store: e.store, Tokens: testTokens, Logger: e.h.log,
		ClientMaxQueued: limit, QueuedRefresh: time.Nanosecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.StopWaiting)
	var ids []string
	for i := range limit {
		ids = append(ids, accepted(t, e.post(t, acmeToken, phoneBody("0712000700", fmt.Sprint("X", i)))))
	}
	e.projectRequested(t, ids...)
	e2 := *e
	e2.h = other
	wantQueueFull(t, "the other instance", e2.post(t, acmeToken, phoneBody("0712000701", "other")))
	accepted(t, e2.post(t, globexToken, phoneBody("0712000702", "G")))
}

// Requests at once from one client: exactly the cap is accepted.
func TestClientQueuedCapConcurrent(t *testing.T) {
	t.Parallel()
	const limit, requests = 5, 20
	e := queuedEnv(t, limit)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codes = map[int]int{}
	)
	for i := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := httptest.NewRecorder()
			e.srv.ServeHTTP(w, newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, phoneBody(fmt.Sprintf("07120008%02d", i), "C")))
			mu.Lock()
			codes[w.Code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[http.StatusAccepted] != limit || codes[http.StatusTooManyRequests] != requests-limit {
		t.Errorf("answers %v, want %d accepted and %d refused", codes, limit, requests-limit)
	}
}

// A request refused or not published takes no place; Postgres down is a
// 503, not a waiver.
func TestClientQueuedCapNotPublished(t *testing.T) {
	t.Parallel()
	e := queuedEnv(t, 1)
	ctx := context.Background()
	if err := e.ns.JS.DeleteStream(ctx, events.StreamName); err != nil {
		t.Fatal(err)
	}
	if r := e.post(t, acmeToken, phoneBody("0712000900", "N")); r.status != http.StatusServiceUnavailable {
		t.Fatalf("stream gone: %d %s", r.status, r.raw)
	}
	if _, err := events.EnsureStream(ctx, e.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	accepted(t, e.post(t, acmeToken, phoneBody("0712000900", "N")))

	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	if r := e.post(t, globexToken, phoneBody("0712000901", "D")); r.status != http.StatusServiceUnavailable || r.body["message"] != MsgUnavailable {
		t.Fatalf("database down: %d %s", r.status, r.raw)
	}
}

// The count is read once per refresh, whatever the requests in between;
// requests accepted here count until the read model has them; a read that
// fails refuses nothing silently.
func TestQueuedLimits(t *testing.T) {
	t.Parallel()
	var (
		reads  int
		stored []string // the read model: queued ids of the client
		fail   error
	)
	count := func(_ context.Context, client string, ids []string) (store.Queued, error) {
		reads++
		if fail != nil {
			return store.Queued{}, fail
		}
		q := store.Queued{Count: len(stored)}
		for _, id := range ids {
			if slices.Contains(stored, id) {
				q.Seen = append(q.Seen, id)
			}
		}
		return q, nil
	}
	ctx := context.Background()
	take := func(l *queuedLimits, id string, stored bool) bool {
		t.Helper()
		done, _, ok, err := l.take(ctx, "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			done(stored)
		}
		return ok
	}

	l := newQueuedLimits(3, time.Hour, count)
	for i, want := range []bool{true, true, true, true, false} {
		// The second is certainly not stored: it takes no place.
		if got := take(l, fmt.Sprint("id-", i), i != 1); got != want {
			t.Fatalf("request %d: let through %v, want %v", i, got, want)
		}
	}
	if reads != 1 {
		t.Errorf("%d reads within one refresh, want 1", reads)
	}

	// Read at every request: the ids accepted here count once, in the
	// read model or not.
	l = newQueuedLimits(2, time.Nanosecond, count)
	take(l, "a", true)
	stored = []string{"a"}
	if !take(l, "b", true) {
		t.Fatal("a request projected is counted twice")
	}
	if take(l, "c", true) {
		t.Fatal("a request not projected yet is not counted")
	}
	stored = nil // both dispatched
	if !take(l, "d", true) {
		t.Fatal("refused once the requests were dispatched")
	}
	// A retry of a request counted here (the same id, after an unknown
	// outcome) is that request: let through at the cap, not counted again.
	if !take(l, "d", true) {
		t.Fatal("a retry of the request counted is refused")
	}
	if take(l, "e", true) {
		t.Fatal("a new request let through over the cap")
	}

	fail = errors.New("connection refused")
	if _, _, ok, err := l.take(ctx, "acme", "f"); ok || !errors.Is(err, errNotSent) {
		t.Fatalf("read failing: let through %v, error %v", ok, err)
	}
	if newQueuedLimits(0, 0, count) != nil {
		t.Error("a cap of 0 limits")
	}
}
