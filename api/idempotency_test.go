package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

func keyedRequest(token, key, ctype, body string) *http.Request {
	req := newRequest(http.MethodPost, PushPath, token, ctype, body)
	if key != "" {
		req.Header.Set(IdempotencyHeader, key)
	}
	return req
}

func (e *testEnv) postKey(t testing.TB, token, key, body string) response {
	t.Helper()
	return e.do(t, keyedRequest(token, key, ctJSON, body))
}

// keyRow is the stored state of an idempotency key.
type keyRow struct {
	TrackingID string `db:"tracking_id"`
	State      string `db:"state"`
}

func (e *testEnv) keyRow(t testing.TB, client, key string) (keyRow, bool) {
	t.Helper()
	var rows []keyRow
	if err := e.db.Select(&rows, `SELECT tracking_id, state FROM idempotency_keys WHERE client = $1 AND key = $2`, client, key); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		return keyRow{}, false
	}
	return rows[0], true
}

// accepted checks a 202 and returns its tracking id.
func accepted(t testing.TB, r response) string {
	t.Helper()
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202: %s", r.status, r.raw)
	}
	id, _ := r.body["tracking_id"].(string)
	if _, err := uuid.Parse(id); err != nil {
		t.Fatalf("tracking_id %q: %v", id, err)
	}
	if r.header.Get("Location") != RecordPath+id || r.body["success"] != true || r.body["message"] != MsgAccepted {
		t.Errorf("202 answer: Location %q, body %s", r.header.Get("Location"), r.raw)
	}
	return id
}

func TestIdempotentRepeat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		ctype1, body1 string
		ctype2, body2 string
	}{
		{name: "same body", ctype1: ctJSON, body1: validBody, ctype2: ctJSON, body2: validBody},
		{name: "amount as a string", ctype1: ctJSON, body1: validBody, ctype2: ctJSON,
			body2: `{"phone":"0712 345-678","amount":"1500","reference":"INV-2024-001","tag":"loan-repayment"}`},
		{name: "phone written another way, fields reordered", ctype1: ctJSON, body1: validBody, ctype2: ctJSON,
			body2: `{"tag":" loan-repayment ","reference":"INV-2024-001","amount":1500,"phone":"+254712345678"}`},
		{name: "form then JSON", ctype1: ctForm,
			body1:  "phone=0712345678&amount=1500&reference=INV-2024-001&tag=loan-repayment",
			ctype2: ctJSON, body2: validBody},
		{name: "no tag and null tag", ctype1: ctJSON,
			body1:  `{"phone":"0712345678","amount":1500,"reference":"INV-2024-001"}`,
			ctype2: ctJSON, body2: `{"phone":"0712345678","amount":1500,"reference":"INV-2024-001","tag":null}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, nil)
			first := e.do(t, keyedRequest(acmeToken, "order-42/attempt", tc.ctype1, tc.body1))
			id := accepted(t, first)
			if first.header.Get(ReplayedHeader) != "" {
				t.Errorf("first answer is marked replayed")
			}
			for i := range 2 {
				again := e.do(t, keyedRequest(acmeToken, "order-42/attempt", tc.ctype2, tc.body2))
				if got := accepted(t, again); got != id {
					t.Fatalf("repeat %d: tracking id %s, want the first's %s", i+1, got, id)
				}
				if again.header.Get(ReplayedHeader) != "true" {
					t.Errorf("repeat %d: %s = %q", i+1, ReplayedHeader, again.header.Get(ReplayedHeader))
				}
			}
			if n := e.streamMsgs(t); n != 1 {
				t.Errorf("stream holds %d messages, want one stk.requested", n)
			}
			_, _, msgID := e.requested(t, id)
			if msgID != events.MsgID(events.TypeRequested, id) {
				t.Errorf("Nats-Msg-Id %q", msgID)
			}
			if row, ok := e.keyRow(t, "acme", "order-42/attempt"); !ok || row.State != store.KeyDone || row.TrackingID != id {
				t.Errorf("key row = %+v (found %v)", row, ok)
			}
		})
	}
}

func TestIdempotencyKeyDifferentRequest(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	id := accepted(t, e.postKey(t, acmeToken, "k1", validBody))
	want := map[string]any{
		"success": false,
		"message": MsgKeyMismatch,
		"errors":  map[string]any{"idempotency_key": []any{MsgKeyMismatch}},
	}
	for _, body := range []string{
		`{"phone":"0712345678","amount":1501,"reference":"INV-2024-001","tag":"loan-repayment"}`,
		`{"phone":"0712345679","amount":1500,"reference":"INV-2024-001","tag":"loan-repayment"}`,
		`{"phone":"0712345678","amount":1500,"reference":"INV-2024-002","tag":"loan-repayment"}`,
		`{"phone":"0712345678","amount":1500,"reference":"INV-2024-001"}`,
		`{"phone":"0712345678","amount":1500,"reference":"INV-2024-001","tag":"other"}`,
	} {
		r := e.postKey(t, acmeToken, "k1", body)
		if r.status != http.StatusUnprocessableEntity {
			t.Errorf("%s: status %d, want 422: %s", body, r.status, r.raw)
			continue
		}
		if diff := cmp.Diff(want, r.body); diff != "" {
			t.Errorf("%s: body (-want +got):\n%s", body, diff)
		}
	}
	// The refusals changed nothing: the key still answers with its request.
	if got := accepted(t, e.postKey(t, acmeToken, "k1", validBody)); got != id {
		t.Errorf("after the refusals: %s, want %s", got, id)
	}
	if n := e.streamMsgs(t); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
	// An invalid body is refused for itself, before the key is looked at.
	if r := e.postKey(t, acmeToken, "k1", `{"phone":"0712345678","amount":0,"reference":"x"}`); r.status != http.StatusUnprocessableEntity || r.body["message"] == MsgKeyMismatch {
		t.Errorf("invalid body with a used key: %d %s", r.status, r.raw)
	}
}

func TestIdempotencyKeyInvalid(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	want := map[string]any{"success": false, "message": MsgKeyInvalid}
	for name, set := range map[string]func(http.Header){
		"empty":           func(h http.Header) { h.Set(IdempotencyHeader, "") },
		"256 characters":  func(h http.Header) { h.Set(IdempotencyHeader, strings.Repeat("k", 256)) },
		"not ASCII":       func(h http.Header) { h.Set(IdempotencyHeader, "clé-1") },
		"control":         func(h http.Header) { h.Set(IdempotencyHeader, "key\x01") },
		"DEL":             func(h http.Header) { h.Set(IdempotencyHeader, "key\x7f") },
		"given twice":     func(h http.Header) { h.Add(IdempotencyHeader, "a"); h.Add(IdempotencyHeader, "b") },
		"twice, the same": func(h http.Header) { h.Add(IdempotencyHeader, "a"); h.Add(IdempotencyHeader, "a") },
	} {
		t.Run(name, func(t *testing.T) {
			req := newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, validBody)
			set(req.Header)
			r := e.do(t, req)
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", r.status, r.raw)
			}
			if diff := cmp.Diff(want, r.body); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
	if n := e.streamMsgs(t); n != 0 {
		t.Errorf("stream holds %d messages after refusals", n)
	}
	// The limits themselves are keys.
	for _, k := range []string{"k", strings.Repeat("k", 255), " !~ spaces and punctuation ~! ", "550e8400-e29b-41d4-a716-446655440000"} {
		id := accepted(t, e.postKey(t, acmeToken, k, validBody))
		if got := accepted(t, e.postKey(t, acmeToken, k, validBody)); got != id {
			t.Errorf("key %q: repeat got %s, want %s", k, got, id)
		}
	}
	// Unauthenticated requests are refused before the key is looked at.
	if r := e.postKey(t, "", strings.Repeat("k", 300), validBody); r.status != http.StatusUnauthorized {
		t.Errorf("unauthenticated with a bad key: %d", r.status)
	}
}

func TestIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	const n = 20
	type result struct {
		status int
		id     string
		retry  string
		raw    string
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			rec := httptest.NewRecorder()
			e.srv.ServeHTTP(rec, keyedRequest(acmeToken, "same-key", ctJSON, validBody))
			r := result{status: rec.Code, raw: rec.Body.String(), retry: rec.Header().Get("Retry-After")}
			if rec.Code == http.StatusAccepted {
				r.id = rec.Header().Get("Location")
			}
			results[i] = r
		}()
	}
	close(start)
	wg.Wait()

	var ids []string
	busy := 0
	for i, r := range results {
		switch r.status {
		case http.StatusAccepted:
			ids = append(ids, r.id)
		case http.StatusConflict:
			busy++
			if !strings.Contains(r.raw, MsgKeyBusy) || r.retry == "" {
				t.Errorf("request %d: 409 %q, Retry-After %q", i, r.raw, r.retry)
			}
		default:
			t.Errorf("request %d: status %d: %s", i, r.status, r.raw)
		}
	}
	if len(ids) == 0 {
		t.Fatalf("no request was accepted (%d busy)", busy)
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Errorf("accepted under two tracking ids: %s and %s", ids[0], id)
		}
	}
	if m := e.streamMsgs(t); m != 1 {
		t.Errorf("stream holds %d messages, want exactly one stk.requested", m)
	}
	t.Logf("%d accepted, %d told 409", len(ids), busy)
	// Once settled, every retry gets the id.
	if got := RecordPath + accepted(t, e.postKey(t, acmeToken, "same-key", validBody)); got != ids[0] {
		t.Errorf("after the burst: %s, want %s", got, ids[0])
	}
}

func TestIdempotencyKeyPerClient(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	a := accepted(t, e.postKey(t, acmeToken, "shared", validBody))
	g := accepted(t, e.postKey(t, globexToken, "shared", validBody))
	if a == g {
		t.Fatal("two clients' requests got one tracking id")
	}
	// And a different body under the same key is fine for the other client.
	other := `{"phone":"0712345678","amount":99,"reference":"X"}`
	accepted(t, e.postKey(t, globexToken, "only-acme-used-this", other))
	accepted(t, e.postKey(t, acmeToken, "only-acme-used-this", validBody))
	if n := e.streamMsgs(t); n != 4 {
		t.Errorf("stream holds %d messages, want 4", n)
	}
	if got := accepted(t, e.postKey(t, globexToken, "shared", validBody)); got != g {
		t.Errorf("globex's repeat: %s, want %s", got, g)
	}
}

func TestIdempotencyKeyExpired(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.IdempotencyTTL = time.Hour })
	first := accepted(t, e.postKey(t, acmeToken, "k", validBody))
	var ttl float64
	if err := e.db.Get(&ttl, `SELECT extract(epoch FROM expires_at - created_at) FROM idempotency_keys`); err != nil {
		t.Fatal(err)
	}
	if ttl != 3600 {
		t.Errorf("key kept %vs, want the TTL", ttl)
	}
	e.db.MustExec(`UPDATE idempotency_keys SET expires_at = now() - interval '1 second'`)
	// Forgotten: the same key now stands for a new request, even another one.
	second := accepted(t, e.postKey(t, acmeToken, "k", `{"phone":"0712345678","amount":7,"reference":"R"}`))
	if second == first {
		t.Fatal("an expired key still answered with its old tracking id")
	}
	if n := e.streamMsgs(t); n != 2 {
		t.Errorf("stream holds %d messages, want 2", n)
	}
	if got := accepted(t, e.postKey(t, acmeToken, "k", `{"phone":"0712345678","amount":7,"reference":"R"}`)); got != second {
		t.Errorf("repeat after renewal: %s, want %s", got, second)
	}
}

// claimAsCrashedAPI claims key for validBody as an api that died right
// after claiming would have left it.
func claimAsCrashedAPI(t *testing.T, e *testEnv, key string) string {
	t.Helper()
	req, err := DecodeRequest(ctJSON, []byte(validBody))
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.Must(uuid.NewV7()).String()
	c, err := e.store.ClaimKey(context.Background(), store.ClaimArgs{
		Client: "acme", Key: key, RequestHash: requestHash(req), TrackingID: id,
		TTL: time.Hour, Lease: time.Hour,
	})
	if err != nil || c.Outcome != store.ClaimNew {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	return id
}

func TestIdempotencyPendingClaimTakenOver(t *testing.T) {
	t.Parallel()
	t.Run("crashed before publishing", func(t *testing.T) {
		e := newTestEnv(t, nil)
		id := claimAsCrashedAPI(t, e, "k")
		r := e.postKey(t, acmeToken, "k", validBody)
		if r.status != http.StatusConflict || r.body["message"] != MsgKeyBusy || r.header.Get("Retry-After") == "" {
			t.Fatalf("while the lease runs: %d %v %s", r.status, r.header, r.raw)
		}
		if n := e.streamMsgs(t); n != 0 {
			t.Fatalf("a 409 published %d messages", n)
		}
		e.db.MustExec(`UPDATE idempotency_keys SET lease_until = now() - interval '1 millisecond'`)
		if got := accepted(t, e.postKey(t, acmeToken, "k", validBody)); got != id {
			t.Fatalf("take-over answered %s, want the claimed %s", got, id)
		}
		_, req, msgID := e.requested(t, id)
		if msgID != events.MsgID(events.TypeRequested, id) || req.Client != "acme" || req.Amount != 1500 {
			t.Errorf("published %+v with Nats-Msg-Id %q", req, msgID)
		}
		if row, _ := e.keyRow(t, "acme", "k"); row.State != store.KeyDone {
			t.Errorf("key state %q after the take-over", row.State)
		}
	})

	t.Run("crashed after publishing", func(t *testing.T) {
		e := newTestEnv(t, nil)
		id := claimAsCrashedAPI(t, e, "k")
		pub := &events.Publisher{JS: e.ns.JS, Source: EventSource}
		p := payment(id, "acme")
		if _, err := pub.Publish(context.Background(), events.Requested{Payment: p}); err != nil {
			t.Fatal(err)
		}
		e.db.MustExec(`UPDATE idempotency_keys SET lease_until = now()`)
		r := e.postKey(t, acmeToken, "k", validBody)
		if got := accepted(t, r); got != id || r.header.Get(ReplayedHeader) != "true" {
			t.Fatalf("take-over answered %s (replayed %q), want %s", got, r.header.Get(ReplayedHeader), id)
		}
		if n := e.streamMsgs(t); n != 1 {
			t.Errorf("stream holds %d messages, want the one stk.requested", n)
		}
		if row, _ := e.keyRow(t, "acme", "k"); row.State != store.KeyDone {
			t.Errorf("key state %q", row.State)
		}
	})
}

func TestIdempotencyPublishRefused(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	ctx := context.Background()
	if err := e.ns.JS.DeleteStream(ctx, events.StreamName); err != nil {
		t.Fatal(err)
	}
	r := e.postKey(t, acmeToken, "k", validBody)
	if r.status != http.StatusServiceUnavailable || r.body["message"] != MsgUnavailable || r.header.Get("Retry-After") != "5" {
		t.Fatalf("status %d %v: %s", r.status, r.header, r.raw)
	}
	// Nothing was stored, so the claim is gone: the retry starts afresh.
	if row, ok := e.keyRow(t, "acme", "k"); ok {
		t.Fatalf("claim left after a refused publish: %+v", row)
	}
	if _, err := events.EnsureStream(ctx, e.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	id := accepted(t, e.postKey(t, acmeToken, "k", validBody))
	e.requested(t, id)
	if n := e.streamMsgs(t); n != 1 {
		t.Errorf("stream holds %d messages", n)
	}
}

// loseAcks makes publishes of stk.requested look as if JetStream's ack was
// lost: the stream is gone and something takes the message but never
// answers. The subscription gets what was sent; make the stream again
// with events.EnsureStream.
func (e *testEnv) loseAcks(t *testing.T) *nats.Subscription {
	t.Helper()
	if err := e.ns.JS.DeleteStream(context.Background(), events.StreamName); err != nil {
		t.Fatal(err)
	}
	sink, err := e.ns.Conn.SubscribeSync(events.Subject(events.TypeRequested, "*"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ns.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	return sink
}

// lostAckTimeout is the api's publish timeout in tests where an ack never
// comes and a later publish must be acked: short, so that the lost one
// does not take the default, and long enough for the acked one on a
// loaded machine (at 400 ms, a CI run at load average 20 had the retry's
// publish time out too).
const lostAckTimeout = 2 * time.Second

// An ack that never comes: the request may be stored, so the claim keeps
// its tracking id and the retry publishes that same id again.
func TestIdempotencyPublishOutcomeUnknown(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.PublishTimeout = lostAckTimeout })
	ctx := context.Background()
	sink := e.loseAcks(t)
	r := e.postKey(t, acmeToken, "k", validBody)
	if r.status != http.StatusServiceUnavailable || r.body["message"] != MsgUnconfirmed {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	row, ok := e.keyRow(t, "acme", "k")
	if !ok || row.State != store.KeyPending {
		t.Fatalf("claim after an unknown outcome: %+v (found %v)", row, ok)
	}
	sent, err := sink.NextMsg(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if events.TrackingIDOf(sent.Subject) != row.TrackingID {
		t.Fatalf("sent %s, claim holds %s", sent.Subject, row.TrackingID)
	}
	_ = sink.Unsubscribe()
	if _, err := events.EnsureStream(ctx, e.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	// The retry does not wait for the lease: the first request is over.
	if got := accepted(t, e.postKey(t, acmeToken, "k", validBody)); got != row.TrackingID {
		t.Fatalf("retry answered %s, want the claimed %s", got, row.TrackingID)
	}
	_, _, msgID := e.requested(t, row.TrackingID)
	if msgID != events.MsgID(events.TypeRequested, row.TrackingID) {
		t.Errorf("Nats-Msg-Id %q", msgID)
	}
	if n := e.streamMsgs(t); n != 1 {
		t.Errorf("stream holds %d messages", n)
	}
}

// Postgres down: the key cannot be claimed, nor its history read. The
// request is not published, but an earlier attempt under the same key may
// have been (chaos: an api killed after the publish, before its answer;
// the client's retry met Postgres stopped and was told "nothing was
// sent"), so the answer is "not confirmed: retry with the same key", never
// "nothing was sent".
func TestIdempotencyDatabaseDown(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	accepted(t, e.postKey(t, acmeToken, "earlier", validBody))
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"earlier", "fresh"} {
		r := e.postKey(t, acmeToken, key, validBody)
		if r.status != http.StatusServiceUnavailable || r.body["message"] != MsgUnconfirmed {
			t.Fatalf("key %s: status %d: %s; want 503 %q", key, r.status, r.raw, MsgUnconfirmed)
		}
	}
	if n := e.streamMsgs(t); n != 1 {
		t.Errorf("stream holds %d messages, want the earlier request's only: none published without a claim", n)
	}
	// Without a key the request does not need Postgres.
	accepted(t, e.post(t, acmeToken, validBody))
}

func TestNoKeyLeavesNoClaim(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	a := accepted(t, e.post(t, acmeToken, validBody))
	b := accepted(t, e.post(t, acmeToken, validBody))
	if a == b {
		t.Error("two requests without a key got one tracking id")
	}
	var n int
	if err := e.db.Get(&n, `SELECT count(*) FROM idempotency_keys`); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d keys stored for requests without one", n)
	}
}

func TestIdempotencySyncMode(t *testing.T) {
	t.Parallel()
	t.Run("answered", func(t *testing.T) {
		e := newTestEnv(t, func(o *Options) { o.DispatchMode = ModeSync; o.SyncTimeout = 20 * time.Second })
		fakeDispatcher(t, e, 0, func(p events.Payment) events.Event {
			return events.Dispatched{Payment: p, MerchantRequestID: "m-" + p.TrackingID, CheckoutRequestID: "ws_CO_" + p.TrackingID}
		})
		first := e.postKey(t, acmeToken, "k", validBody)
		if first.status != http.StatusOK {
			t.Fatalf("status %d: %s", first.status, first.raw)
		}
		again := e.postKey(t, acmeToken, "k", validBody)
		if again.status != http.StatusOK || again.header.Get(ReplayedHeader) != "true" {
			t.Fatalf("repeat: status %d %v: %s", again.status, again.header, again.raw)
		}
		if diff := cmp.Diff(first.body, again.body); diff != "" {
			t.Errorf("repeat's record (-first +repeat):\n%s", diff)
		}
		if n := e.streamMsgs(t); n != 2 {
			t.Errorf("stream holds %d messages, want stk.requested and stk.dispatched", n)
		}
	})

	t.Run("not answered yet", func(t *testing.T) {
		e := newTestEnv(t, func(o *Options) { o.DispatchMode = ModeSync; o.SyncTimeout = 200 * time.Millisecond })
		id := accepted(t, e.postKey(t, acmeToken, "k", validBody))
		r := e.postKey(t, acmeToken, "k", validBody)
		if got := accepted(t, r); got != id {
			t.Errorf("repeat: %s, want %s", got, id)
		}
		if n := e.streamMsgs(t); n != 1 {
			t.Errorf("stream holds %d messages", n)
		}
	})
}

const pinnedHash = "32b0492cafecd60c8f74b5e7ff91fce51b09942630e3d64207fdb2b891fa19f4"

// The hash is stored with every key: a change to its encoding would turn
// the retries of requests made before a deploy into 422s. Pin it.
func TestRequestHashIsStable(t *testing.T) {
	t.Parallel()
	r := Request{Phone: "254712345678", Amount: 1500, Reference: "INV-2024-001", Tag: "loan-repayment"}
	got := requestHash(r)
	if len(got) != 64 {
		t.Fatalf("hash %q", got)
	}
	if got != pinnedHash {
		t.Errorf("requestHash = %s, want %s: the encoding changed (bump its version prefix on purpose, never by accident)", got, pinnedHash)
	}
	for _, other := range []Request{
		{Phone: "254712345679", Amount: 1500, Reference: "INV-2024-001", Tag: "loan-repayment"},
		{Phone: "254712345678", Amount: 15000, Reference: "INV-2024-001", Tag: "loan-repayment"},
		{Phone: "254712345678", Amount: 1500, Reference: "INV-2024-00", Tag: "1loan-repayment"},
		{Phone: "254712345678", Amount: 1500, Reference: "INV-2024-001"},
	} {
		if requestHash(other) == got {
			t.Errorf("%+v hashes like %+v", other, r)
		}
	}
}
