package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/logtest"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/openapitest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	acmeToken   = "acme-test-token-0001"
	globexToken = "globex-test-token-0002"
)

var testTokens = []ClientToken{{Client: "acme", Token: acmeToken}, {Client: "globex", Token: globexToken}}

// fixedNow is the clock of the handlers under test.
var fixedNow = time.Date(2024, 3, 21, 11, 30, 1, 0, time.UTC)

// testEnv is a handler over a real JetStream and a real Postgres.
type testEnv struct {
	ns    *natstest.Server
	db    *sqlx.DB
	store *store.Store
	conn  *nats.Conn // the handler's own, connected as Run connects
	h     *Handler
	// srv is h with every exchange checked against openapi.yaml.
	srv  http.Handler
	logs *logtest.Buffer
}

func newTestEnv(t testing.TB, tweak func(*Options)) *testEnv {
	t.Helper()
	ns := natstest.Start(t)
	db := pgtest.New(t)
	logs := &logtest.Buffer{}
	t.Cleanup(func() {
		// The causes of 503s and 500s are in the logs only.
		if t.Failed() {
			t.Logf("api logs:\n%s", logs.String())
		}
	})
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	conn, js, err := connectNATS(ns.URL, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	o := Options{
		Conn:   conn,
		JS:     js,
		Store:  store.New(db),
		Tokens: testTokens,
		Logger: log,
		Now:    func() time.Time { return fixedNow },
		// Tests run many searches of one client at once (parallel
		// subtests over one env); TestSearchBoundedWork sets the bounds.
		SearchConcurrency:       64,
		ClientSearchConcurrency: 64,
	}
	if tweak != nil {
		tweak(&o)
	}
	h, err := NewHandler(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.StopWaiting)
	srv := openapitest.Load(t, OpenAPI).Handler(t, h)
	return &testEnv{ns: ns, db: db, store: o.Store, conn: conn, h: h, srv: srv, logs: logs}
}

type response struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func (e *testEnv) do(t testing.TB, req *http.Request) response {
	t.Helper()
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, req)
	r := response{status: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if err := json.Unmarshal(rec.Body.Bytes(), &r.body); err != nil {
		t.Fatalf("%s %s: answer %d is not JSON: %q", req.Method, req.URL.Path, rec.Code, r.raw)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
	return r
}

func newRequest(method, path, token, ctype, body string) *http.Request {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set(TokenHeader, token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return req
}

func (e *testEnv) post(t testing.TB, token, body string) response {
	t.Helper()
	return e.do(t, newRequest(http.MethodPost, PushPath, token, ctJSON, body))
}

func (e *testEnv) get(t testing.TB, token, id string) response {
	t.Helper()
	return e.do(t, newRequest(http.MethodGet, RecordPath+id, token, "", ""))
}

const validBody = `{"phone":"0712 345-678","amount":1500,"reference":"INV-2024-001","tag":"loan-repayment"}`

// requested is the stk.requested of id in the stream, with its Nats-Msg-Id.
func (e *testEnv) requested(t testing.TB, id string) (events.Envelope, events.Requested, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg, err := e.ns.Stream.GetLastMsgForSubject(ctx, events.Subject(events.TypeRequested, id))
	if err != nil {
		t.Fatalf("stk.requested.%s not in the stream: %v", id, err)
	}
	env, ev, err := events.Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	req, ok := ev.(events.Requested)
	if !ok {
		t.Fatalf("event is %T", ev)
	}
	return env, req, msg.Header.Get(jetstream.MsgIDHeader)
}

func (e *testEnv) streamMsgs(t testing.TB) uint64 {
	t.Helper()
	info, err := e.ns.Stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	want := map[string]any{"success": false, "message": "Unauthenticated."}
	id := uuid.Must(uuid.NewV7()).String()
	for _, tc := range []struct {
		name string
		req  *http.Request
	}{
		{"post without token", newRequest(http.MethodPost, PushPath, "", ctJSON, validBody)},
		{"post with unknown token", newRequest(http.MethodPost, PushPath, "nope", ctJSON, validBody)},
		{"post with a token's prefix", newRequest(http.MethodPost, PushPath, acmeToken[:10], ctJSON, validBody)},
		{"post with token in another case", newRequest(http.MethodPost, PushPath, strings.ToUpper(acmeToken), ctJSON, validBody)},
		{"post with the client name", newRequest(http.MethodPost, PushPath, "acme", ctJSON, validBody)},
		{"get without token", newRequest(http.MethodGet, RecordPath+id, "", "", "")},
		{"get with unknown token", newRequest(http.MethodGet, RecordPath+id, "nope", "", "")},
		{"bad JSON without token", newRequest(http.MethodPost, PushPath, "", ctJSON, `{"phone":`)},
		{"oversized without token", newRequest(http.MethodPost, PushPath, "", ctJSON, strings.Repeat(" ", 70<<10))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.req)
			if r.status != http.StatusUnauthorized {
				t.Errorf("status %d, want 401: %s", r.status, r.raw)
			}
			if diff := cmp.Diff(want, r.body); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
	if n := e.streamMsgs(t); n != 0 {
		t.Errorf("unauthenticated requests published %d events", n)
	}
	// The token is sent in a header that no log line repeats.
	if r := e.post(t, acmeToken, validBody); r.status != http.StatusAccepted {
		t.Fatalf("authenticated post = %d %s", r.status, r.raw)
	}
	if logs := e.logs.String(); strings.Contains(logs, acmeToken) {
		t.Errorf("logs reveal the token:\n%s", logs)
	}
}

func TestCreateAccepted(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	r := e.post(t, acmeToken, validBody)
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	id, _ := r.body["tracking_id"].(string)
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 || u.String() != id {
		t.Fatalf("tracking_id %q is not a canonical UUID v7", id)
	}
	want := map[string]any{"success": true, "tracking_id": id, "message": "STK push request accepted for processing."}
	if diff := cmp.Diff(want, r.body); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	if loc := r.header.Get("Location"); loc != "/api/stk-push/"+id {
		t.Errorf("Location = %q", loc)
	}

	env, req, msgID := e.requested(t, id)
	if msgID != id+":requested" {
		t.Errorf("Nats-Msg-Id = %q, want %s:requested", msgID, id)
	}
	if env.Source != "stkgate/api" || env.Type != events.TypeRequested || env.Subject != id || !env.Time.Equal(fixedNow) {
		t.Errorf("envelope = %+v", env)
	}
	wantEv := events.Requested{Payment: events.Payment{
		TrackingID:  id,
		Client:      "acme",
		Phone:       "254712345678",
		Amount:      1500,
		Reference:   "INV-2024-001",
		Tag:         "loan-repayment",
		RequestedAt: fixedNow,
	}}
	if diff := cmp.Diff(wantEv, req); diff != "" {
		t.Errorf("stk.requested (-want +got):\n%s", diff)
	}
	if n := e.streamMsgs(t); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}

	// The log line of the payment carries its tracking id, and the phone
	// only masked.
	logs := e.logs.String()
	if !strings.Contains(logs, `"tracking_id":"`+id+`"`) || !strings.Contains(logs, `"phone":"*********678"`) {
		t.Errorf("logs lack the tracking id or the masked phone:\n%s", logs)
	}
	if strings.Contains(logs, "254712345678") || strings.Contains(logs, "0712 345-678") {
		t.Errorf("logs reveal the phone:\n%s", logs)
	}
}

func TestCreateFormAndStringAmount(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	for _, tc := range []struct {
		name, ctype, body string
		want              events.Payment
	}{
		{"form", ctForm, "phone=%2B254+112-345-604&amount=250&reference=FORM-1",
			events.Payment{Client: "globex", Phone: "254112345604", Amount: 250, Reference: "FORM-1"}},
		{"string amount", ctJSON, `{"phone":"712345678","amount":"99","reference":" R-1 ","tag":""}`,
			events.Payment{Client: "globex", Phone: "254712345678", Amount: 99, Reference: "R-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, newRequest(http.MethodPost, PushPath, globexToken, tc.ctype, tc.body))
			if r.status != http.StatusAccepted {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			id := r.body["tracking_id"].(string)
			_, got, _ := e.requested(t, id)
			tc.want.TrackingID, tc.want.RequestedAt = id, fixedNow
			if diff := cmp.Diff(tc.want, got.Payment); diff != "" {
				t.Errorf("payment (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCreateRefused(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	big := `{"phone":"0712345678","amount":1,"reference":"R","tag":"` + strings.Repeat("x", 64<<10) + `"}`
	tests := []struct {
		name   string
		req    *http.Request
		status int
		want   map[string]any
	}{
		{"not JSON", newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, `{"phone":`), 400,
			map[string]any{"success": false, "message": "The request body is not valid JSON: unexpected end of input."}},
		{"JSON array", newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, `[]`), 400,
			map[string]any{"success": false, "message": "The request body must be a JSON object."}},
		{"duplicate key", newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, `{"amount":1,"amount":2}`), 400,
			map[string]any{"success": false, "message": "The request body has the amount field more than once."}},
		{"deeply nested", newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, `{"x":`+strings.Repeat("[", 30000)+`}`), 400,
			map[string]any{"success": false, "message": "The request body must not nest objects or arrays more than 32 levels deep."}},
		{"too large", newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, big), 413,
			map[string]any{"success": false, "message": "The request body must not be larger than 64 KiB."}},
		{"too large, length unknown", func() *http.Request {
			r := newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, big)
			r.ContentLength = -1 // as with chunked encoding: only reading finds out
			return r
		}(), 413, map[string]any{"success": false, "message": "The request body must not be larger than 64 KiB."}},
		{"too large, length understated", func() *http.Request {
			r := newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, big)
			r.ContentLength = 100
			r.Body = io.NopCloser(strings.NewReader(big))
			return r
		}(), 413, map[string]any{"success": false, "message": "The request body must not be larger than 64 KiB."}},
		{"invalid", newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, `{"phone":"0812345678","amount":1.5,"reference":"THIRTEEN-CHAR","tag":7}`), 422,
			map[string]any{
				"success": false,
				"message": "The phone field must be a valid Kenyan mobile number.",
				"errors": map[string]any{
					"phone":     []any{"The phone field must be a valid Kenyan mobile number."},
					"amount":    []any{"The amount field must be an integer."},
					"reference": []any{"The reference field must not be greater than 12 characters."},
					"tag":       []any{"The tag field must be a string."},
				},
			}},
		{"empty object", newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, `{}`), 422,
			map[string]any{
				"success": false,
				"message": "The phone field is required.",
				"errors": map[string]any{
					"phone":     []any{"The phone field is required."},
					"amount":    []any{"The amount field is required."},
					"reference": []any{"The reference field is required."},
				},
			}},
		{"form invalid", newRequest(http.MethodPost, PushPath, acmeToken, ctForm, "phone=0712345678&amount=0&reference=R"), 422,
			map[string]any{
				"success": false,
				"message": "The amount field must be at least 1.",
				"errors":  map[string]any{"amount": []any{"The amount field must be at least 1."}},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.req)
			if r.status != tc.status {
				t.Errorf("status %d, want %d: %s", r.status, tc.status, r.raw)
			}
			if diff := cmp.Diff(tc.want, r.body); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
	if n := e.streamMsgs(t); n != 0 {
		t.Errorf("refused requests published %d events", n)
	}

	// At the limit exactly is still taken.
	pad := MaxBodyBytes - len(validBody)
	r := e.post(t, acmeToken, validBody+strings.Repeat(" ", pad))
	if r.status != http.StatusAccepted {
		t.Errorf("a body of exactly 64 KiB: %d %s", r.status, r.raw)
	}
}

func TestCreateUnavailable(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, r response) {
		t.Helper()
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503: %s", r.status, r.raw)
		}
		if ra := r.header.Get("Retry-After"); ra != "5" {
			t.Errorf("Retry-After = %q, want 5", ra)
		}
		want := map[string]any{"success": false, "message": MsgUnavailable}
		if diff := cmp.Diff(want, r.body); diff != "" {
			t.Errorf("body (-want +got):\n%s", diff)
		}
	}

	t.Run("stream gone", func(t *testing.T) {
		e := newTestEnv(t, nil)
		ctx := context.Background()
		if err := e.ns.JS.DeleteStream(ctx, events.StreamName); err != nil {
			t.Fatal(err)
		}
		check(t, e.post(t, acmeToken, validBody))
		// Nothing was stored: the stream, made again, is empty.
		s, err := events.EnsureStream(ctx, e.ns.JS, 1)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != 0 {
			t.Errorf("stream holds %d messages after a 503", info.State.Msgs)
		}
		// And with the stream back, requests are taken again.
		if r := e.post(t, acmeToken, validBody); r.status != http.StatusAccepted {
			t.Errorf("after the stream is back: %d %s", r.status, r.raw)
		}
	})

	t.Run("NATS down", func(t *testing.T) {
		e := newTestEnv(t, func(o *Options) { o.PublishTimeout = 2 * time.Second })
		e.ns.Shutdown()
		e.ns.WaitForShutdown()
		deadline := time.Now().Add(5 * time.Second)
		for e.conn.IsConnected() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		check(t, e.post(t, acmeToken, validBody))
		if !strings.Contains(e.logs.String(), `"level":"WARN","msg":"request failed"`) {
			t.Errorf("the 503 was not logged:\n%s", e.logs.String())
		}
	})
}

func TestCreateClientGoneStillPublishes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.DispatchMode = ModeSync; o.SyncTimeout = time.Minute })
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the client hung up before the handler even ran
	req := newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, validBody).WithContext(ctx)
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if n := e.streamMsgs(t); n != 1 {
		t.Fatalf("stream holds %d messages, want the request", n)
	}
	// The wait ended at once, without an answer from Daraja.
	if rec.Code != http.StatusAccepted {
		t.Errorf("status %d: %s", rec.Code, rec.Body)
	}
}

// apply writes events into the read model as the projector would.
func (e *testEnv) apply(t testing.TB, evs ...events.Event) {
	t.Helper()
	if err := e.store.Apply(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
}

func payment(id, client string) events.Payment {
	return events.Payment{
		TrackingID: id, Client: client, Phone: "254712345678", Amount: 1500,
		Reference: "INV-2024-001", Tag: "loan-repayment", RequestedAt: fixedNow,
	}
}

func TestGetRecord(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	id := uuid.Must(uuid.NewV7()).String()
	p := payment(id, "acme")
	e.apply(t,
		events.Requested{Payment: p},
		events.Dispatched{Payment: p, MerchantRequestID: "29115-34620561-1", CheckoutRequestID: "ws_CO_191220191020363925"},
		events.Completed{Payment: p, ResultCode: "0", ResultDesc: "The service request is processed successfully.",
			Receipt: "RBC12ABC34", TransactionDate: "2024-03-21 14:30:55", Source: events.SourceCallback,
			MerchantRequestID: "29115-34620561-1", CheckoutRequestID: "ws_CO_191220191020363925",
			CompletedAt: fixedNow.Add(54 * time.Second)},
	)
	rec, err := e.store.Get(context.Background(), "acme", id)
	if err != nil {
		t.Fatal(err)
	}

	r := e.get(t, acmeToken, id)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	data, _ := r.body["data"].(map[string]any)
	want := map[string]any{
		"id":                   float64(rec.ID),
		"tracking_id":          id,
		"phone_number":         "254712345678",
		"amount":               "1500",
		"reference":            "INV-2024-001",
		"tag":                  "loan-repayment",
		"status":               float64(1),
		"status_label":         "Success",
		"response_code":        "0",
		"response_description": "The service request is processed successfully.",
		"transaction_code":     "RBC12ABC34",
		"merchant_request_id":  "29115-34620561-1",
		"checkout_request_id":  "ws_CO_191220191020363925",
		"meta":                 map[string]any{"transaction_date": "2024-03-21 14:30:55", "late_result": nil},
		"created_at":           "2024-03-21T11:30:01Z",
		"updated_at":           timestamp(rec.UpdatedAt),
	}
	if r.body["success"] != true {
		t.Errorf("success = %v", r.body["success"])
	}
	if diff := cmp.Diff(want, data); diff != "" {
		t.Errorf("data (-want +got):\n%s", diff)
	}
	// The id in upper case is the same id.
	if r := e.get(t, acmeToken, strings.ToUpper(id)); r.status != http.StatusOK {
		t.Errorf("upper-case id: %d", r.status)
	}

	notFound := map[string]any{"success": false, "message": "Record not found."}
	for name, tc := range map[string]struct{ token, id string }{
		"another client's id": {globexToken, id},
		"unknown id":          {acmeToken, uuid.Must(uuid.NewV7()).String()},
		"malformed id":        {acmeToken, "not-a-uuid"},
		"sql in the id":       {acmeToken, "1'%20OR%20'1'='1"},
	} {
		t.Run(name, func(t *testing.T) {
			r := e.get(t, tc.token, tc.id)
			if r.status != http.StatusNotFound {
				t.Errorf("status %d, want 404: %s", r.status, r.raw)
			}
			if diff := cmp.Diff(notFound, r.body); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGetPendingRecord(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	id := uuid.Must(uuid.NewV7()).String()
	p := payment(id, "globex")
	p.Tag = ""
	e.apply(t, events.Requested{Payment: p})
	r := e.get(t, globexToken, id)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	data := r.body["data"].(map[string]any)
	for _, k := range []string{"tag", "response_code", "response_description", "transaction_code", "merchant_request_id", "checkout_request_id"} {
		if v, ok := data[k]; !ok || v != nil {
			t.Errorf("%s = %v, %v; want null", k, v, ok)
		}
	}
	if data["status"] != float64(0) || data["status_label"] != "Pending" ||
		!cmp.Equal(data["meta"], map[string]any{"transaction_date": nil, "late_result": nil}) {
		t.Errorf("data = %v", data)
	}
}

func TestGetDatabaseDown(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	e.db.Close()
	r := e.get(t, acmeToken, uuid.Must(uuid.NewV7()).String())
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "5" {
		t.Errorf("status %d Retry-After %q: %s", r.status, r.header.Get("Retry-After"), r.raw)
	}
	if r.body["message"] != MsgReadUnavailable || strings.Contains(r.raw, "sql") {
		t.Errorf("body %s", r.raw)
	}
}

// fakeDispatcher plays the dispatcher and the projector for sync mode: for
// every stk.requested it publishes answer(p) and, after delay, writes the
// request and the answer into the read model.
func fakeDispatcher(t *testing.T, e *testEnv, delay time.Duration, answer func(events.Payment) events.Event) {
	t.Helper()
	pub := &events.Publisher{JS: e.ns.JS, Source: "stkgate/dispatcher"}
	var wg sync.WaitGroup
	sub, err := e.ns.Conn.Subscribe(events.Subject(events.TypeRequested, "*"), func(m *nats.Msg) {
		_, ev, err := events.Decode(m.Data)
		if err != nil {
			t.Error(err)
			return
		}
		req := ev.(events.Requested)
		ans := answer(req.Payment)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := pub.Publish(ctx, ans); err != nil {
				t.Error(err)
				return
			}
			// The event is out before the read model shows it: sync mode
			// must wait for the read model, not answer from the event.
			time.Sleep(delay)
			if err := e.store.Apply(ctx, []events.Event{req, ans}); err != nil {
				t.Error(err)
			}
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	// The subscription must be in place at the server before the api,
	// on another connection, publishes.
	if err := e.ns.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe(); wg.Wait() })
}

func TestSyncMode(t *testing.T) {
	t.Parallel()
	t.Run("dispatched", func(t *testing.T) {
		e := newTestEnv(t, func(o *Options) { o.DispatchMode = ModeSync; o.SyncTimeout = 20 * time.Second })
		fakeDispatcher(t, e, 300*time.Millisecond, func(p events.Payment) events.Event {
			return events.Dispatched{Payment: p, MerchantRequestID: "m-" + p.TrackingID, CheckoutRequestID: "ws_CO_" + p.TrackingID}
		})
		r := e.post(t, acmeToken, validBody)
		if r.status != http.StatusOK || r.body["success"] != true {
			t.Fatalf("status %d, want 200: %s", r.status, r.raw)
		}
		if r.header.Get("Location") != "" {
			t.Errorf("Location on a 200: %q", r.header.Get("Location"))
		}
		data := r.body["data"].(map[string]any)
		id := data["tracking_id"].(string)
		rec, err := e.store.Get(context.Background(), "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(ViewOf(rec))
		got, _ := json.Marshal(data)
		if !cmp.Equal(jsonMap(t, want), jsonMap(t, got)) {
			t.Errorf("data\n got %s\nwant %s", got, want)
		}
		if rec.ID < 1 || data["checkout_request_id"] != "ws_CO_"+id || data["status"] != float64(0) {
			t.Errorf("data = %s", got)
		}
	})

	t.Run("refused", func(t *testing.T) {
		e := newTestEnv(t, func(o *Options) { o.DispatchMode = ModeSync; o.SyncTimeout = 20 * time.Second })
		fakeDispatcher(t, e, 0, func(p events.Payment) events.Event {
			return events.Completed{Payment: p, ResultCode: "400.002.02", ResultDesc: "Bad Request - Invalid PhoneNumber",
				Source: events.SourceDispatcher, CompletedAt: fixedNow}
		})
		r := e.post(t, acmeToken, validBody)
		if r.status != http.StatusOK {
			t.Fatalf("status %d, want 200: %s", r.status, r.raw)
		}
		data := r.body["data"].(map[string]any)
		if data["status"] != float64(1) || data["status_label"] != "Failed" || data["response_code"] != "400.002.02" {
			t.Errorf("data = %v", data)
		}
	})

	t.Run("timeout answers as async", func(t *testing.T) {
		e := newTestEnv(t, func(o *Options) { o.DispatchMode = ModeSync; o.SyncTimeout = 300 * time.Millisecond })
		r := e.post(t, acmeToken, validBody)
		if r.status != http.StatusAccepted {
			t.Fatalf("status %d, want 202: %s", r.status, r.raw)
		}
		id := r.body["tracking_id"].(string)
		if r.header.Get("Location") != RecordPath+id || r.body["message"] != MsgAccepted {
			t.Errorf("answer %v %s", r.header, r.raw)
		}
		e.requested(t, id)
	})

	t.Run("event missed, read model seen", func(t *testing.T) {
		// The dispatcher's event never reaches the api (a NATS reconnect,
		// say); the read model still shows the answer.
		e := newTestEnv(t, func(o *Options) { o.DispatchMode = ModeSync; o.SyncTimeout = 3 * time.Second })
		sub, err := e.ns.Conn.Subscribe(events.Subject(events.TypeRequested, "*"), func(m *nats.Msg) {
			_, ev, err := events.Decode(m.Data)
			if err != nil {
				t.Error(err)
				return
			}
			req := ev.(events.Requested)
			go func() {
				if err := e.store.Apply(context.Background(), []events.Event{req, events.Dispatched{
					Payment: req.Payment, MerchantRequestID: "m", CheckoutRequestID: "ws_CO_" + req.TrackingID}}); err != nil {
					t.Error(err)
				}
			}()
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := e.ns.Conn.Flush(); err != nil {
			t.Fatal(err)
		}
		r := e.post(t, acmeToken, validBody)
		if r.status != http.StatusOK {
			t.Fatalf("status %d, want 200: %s\n%s", r.status, r.raw, e.logs.String())
		}
	})

	t.Run("shutdown answers as async", func(t *testing.T) {
		e := newTestEnv(t, func(o *Options) { o.DispatchMode = ModeSync; o.SyncTimeout = time.Minute })
		e.h.StopWaiting()
		r := e.post(t, acmeToken, validBody)
		if r.status != http.StatusAccepted {
			t.Fatalf("status %d, want 202: %s", r.status, r.raw)
		}
		e.requested(t, r.body["tracking_id"].(string))
	})
}

func jsonMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestProbes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	r := e.do(t, newRequest(http.MethodGet, "/healthz", "", "", ""))
	if r.status != http.StatusOK || r.body["status"] != "ok" {
		t.Errorf("healthz = %d %s", r.status, r.raw)
	}
	r = e.do(t, newRequest(http.MethodGet, "/readyz", "", "", ""))
	if want := map[string]any{"status": "ready", "nats": "ok", "postgres": "ok"}; r.status != 200 || !cmp.Equal(want, r.body) {
		t.Errorf("readyz = %d %s", r.status, r.raw)
	}

	e.db.Close()
	r = e.do(t, newRequest(http.MethodGet, "/readyz", "", "", ""))
	if want := map[string]any{"status": "not ready", "nats": "ok", "postgres": "unreachable"}; r.status != 503 || !cmp.Equal(want, r.body) {
		t.Errorf("readyz without Postgres = %d %s", r.status, r.raw)
	}

	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	deadline := time.Now().Add(5 * time.Second)
	for e.conn.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	r = e.do(t, newRequest(http.MethodGet, "/readyz", "", "", ""))
	if r.status != 503 || r.body["nats"] == "ok" || r.body["status"] != "not ready" {
		t.Errorf("readyz without NATS = %d %s", r.status, r.raw)
	}
	// Liveness does not depend on either.
	if r := e.do(t, newRequest(http.MethodGet, "/healthz", "", "", "")); r.status != 200 {
		t.Errorf("healthz = %d", r.status)
	}
}

func TestRoutingErrors(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	for _, tc := range []struct {
		req    *http.Request
		status int
		msg    string
	}{
		{newRequest(http.MethodGet, "/nope", "", "", ""), 404, "Not found."},
		{newRequest(http.MethodGet, "/api/nope", acmeToken, "", ""), 404, "Not found."},
		{newRequest(http.MethodGet, RecordPath, acmeToken, "", ""), 404, "Not found."},
		{newRequest(http.MethodPost, RecordPath+uuid.NewString(), "", ctJSON, validBody), 405, "Method not allowed."},
		{newRequest(http.MethodDelete, PushPath, acmeToken, "", ""), 405, "Method not allowed."},
		{newRequest(http.MethodPut, RecordPath+uuid.NewString(), acmeToken, "", ""), 405, "Method not allowed."},
	} {
		r := e.do(t, tc.req)
		if r.status != tc.status || r.body["message"] != tc.msg || r.body["success"] != false {
			t.Errorf("%s %s = %d %s", tc.req.Method, tc.req.URL.Path, r.status, r.raw)
		}
	}
}

func TestInternalErrorsStayInternal(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	req := newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, validBody)
	rec := httptest.NewRecorder()
	c := e.h.e.NewContext(req, rec)
	c.Set(ctxTrackingID, "0193a8c2-0000-7000-8000-000000000001")
	e.h.handleError(errors.New("pq: password authentication failed for user stk at 10.0.0.3"), c)
	if rec.Code != 500 {
		t.Errorf("status %d", rec.Code)
	}
	if got, want := strings.TrimSpace(rec.Body.String()), `{"success":false,"message":"Internal server error."}`; got != want {
		t.Errorf("body %s, want %s", got, want)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "password authentication failed") || !strings.Contains(logs, `"tracking_id":"0193a8c2-0000-7000-8000-000000000001"`) {
		t.Errorf("the cause is not logged with its tracking id:\n%s", logs)
	}
}

func TestNewHandlerRefusesIncompleteOptions(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	good := Options{Conn: e.conn, JS: e.h.pub.JS, Store: e.store, Tokens: testTokens}
	for name, tweak := range map[string]func(*Options){
		"no conn":      func(o *Options) { o.Conn = nil },
		"no js":        func(o *Options) { o.JS = nil },
		"no store":     func(o *Options) { o.Store = nil },
		"shared token": func(o *Options) { o.Tokens = []ClientToken{{"a", "t"}, {"b", "t"}} },
		"bad mode":     func(o *Options) { o.DispatchMode = "later" },
		"lease shorter than a publish": func(o *Options) {
			o.IdempotencyLease = time.Second
			o.PublishTimeout = 2 * time.Second
		},
	} {
		o := good
		tweak(&o)
		if _, err := NewHandler(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// BenchmarkCreate accepts requests without limits and with the cap of
// queued requests (counted in Postgres every DefaultQueuedRefresh; the
// cap itself out of reach).
func BenchmarkCreate(b *testing.B) {
	b.Run("no cap", func(b *testing.B) { benchmarkCreate(b, func(*Options) {}) })
	b.Run("queued cap", func(b *testing.B) { benchmarkCreate(b, func(o *Options) { o.ClientMaxQueued = 1 << 30 }) })
}

// benchmarkCreate accepts requests with a handler of the test options,
// logging nothing, as tweak changes them.
func benchmarkCreate(b *testing.B, tweak func(*Options)) {
	e := newTestEnv(b, func(o *Options) { o.Logger = slog.New(slog.DiscardHandler); tweak(o) })
	b.ReportAllocs()
	b.ResetTimer() // the database and stream of newTestEnv are not the path measured
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, validBody))
			if rec.Code != http.StatusAccepted {
				b.Errorf("status %d: %s", rec.Code, rec.Body)
				return
			}
		}
	})
}

// TestPollAccessLine: a poll's access line carries every attr, in its
// order, the bytes answered among them, and nothing of the token.
func TestPollAccessLine(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	id := uuid.Must(uuid.NewV7()).String()
	e.apply(t, events.Requested{Payment: payment(id, "acme")})
	r := e.get(t, acmeToken, id)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	want := regexp.MustCompile(`"msg":"request","method":"GET","path":"` + RecordPath + id +
		`","status":200,"duration":\d+,"bytes":` + strconv.Itoa(len(r.raw)) +
		`,"remote":"192\.0\.2\.1:1234","client":"acme","tracking_id":"` + id + `"}`)
	var line string
	for l := range strings.Lines(e.logs.String()) {
		if strings.Contains(l, `"msg":"request"`) && strings.Contains(l, id) {
			line = l
		}
	}
	if !want.MatchString(line) {
		t.Errorf("access line %q does not match %s", line, want)
	}
	if strings.Contains(e.logs.String(), acmeToken) {
		t.Error("the token is in the logs")
	}
}

// TestAccessLinesToTheAccessLogger: with an AccessLogger (whose lines
// may be held and lost in a crash: service.Loggers), every access line
// below 500 goes there and nothing else does; the payment's own lines and
// the access line of a 5xx go to the Logger, written at once.
func TestAccessLinesToTheAccessLogger(t *testing.T) {
	t.Parallel()
	access := &logtest.Buffer{}
	e := newTestEnv(t, func(o *Options) { o.AccessLogger = slog.New(slog.NewJSONHandler(access, nil)) })
	r := e.post(t, acmeToken, validBody)
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	id, _ := r.body["tracking_id"].(string)
	if nf := e.get(t, acmeToken, uuid.Must(uuid.NewV7()).String()); nf.status != http.StatusNotFound {
		t.Fatalf("poll of an unknown id: %d", nf.status)
	}
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	if r := e.get(t, acmeToken, id); r.status != http.StatusServiceUnavailable {
		t.Fatalf("poll without Postgres: %d %s", r.status, r.raw)
	}
	count := func(s, sub string) int { return strings.Count(s, sub) }
	a, l := access.String(), e.logs.String()
	if count(a, `"msg":"request","method":"POST"`) != 1 || count(a, `"status":404`) != 1 {
		t.Errorf("access log %q, want the 202's and the 404's lines", a)
	}
	if strings.Contains(a, "stk push accepted") || strings.Contains(a, `"status":503`) {
		t.Errorf("access log %q holds a payment's line or a 5xx's", a)
	}
	if !strings.Contains(l, `"msg":"stk push accepted"`) || count(l, `"msg":"request"`) != 1 || !strings.Contains(l, `"status":503`) {
		t.Errorf("logs %q, want the accepted line and the 503's access line alone", l)
	}
}

// TestAccessLineMasksPhonesInThePath: a client that polls a phone number
// where the tracking id goes (a mistake, or a probe) does not put the
// number in the logs: the access line's path shows it masked, as every
// phone in stkgate's logs is; a tracking id in the path stays whole.
func TestAccessLineMasksPhonesInThePath(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	for _, p := range []string{"254712345678", "+254712345678", "0712345678"} {
		if r := e.get(t, acmeToken, p); r.status != http.StatusNotFound && r.status != http.StatusBadRequest {
			t.Fatalf("poll of %q: status %d: %s", p, r.status, r.raw)
		}
	}
	logs := e.logs.String()
	for _, digits := range []string{"254712345678", "0712345678", "712345"} {
		if strings.Contains(logs, digits) {
			t.Errorf("%q is in the logs:\n%s", digits, logs)
		}
	}
	if !strings.Contains(logs, `"path":"`+RecordPath+`*********678"`) {
		t.Errorf("no access line with the masked path:\n%s", logs)
	}
}
