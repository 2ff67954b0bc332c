package callback

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/logtest"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/openapitest"
)

// The exact answers Daraja (or whatever sits in front of us) gets.
const (
	bodyAccepted    = `{"ResultCode":0,"ResultDesc":"Accepted"}` + "\n"
	bodyUnknownID   = `{"ResultCode":1,"ResultDesc":"Rejected: unknown tracking id"}` + "\n"
	bodyTooLarge    = `{"ResultCode":1,"ResultDesc":"Rejected: body too large"}` + "\n"
	bodyUnavailable = `{"ResultCode":1,"ResultDesc":"Unavailable: try again later"}` + "\n"
	bodyInternal    = `{"ResultCode":1,"ResultDesc":"Internal error"}` + "\n"
)

var (
	clock       = time.Date(2024, 3, 21, 11, 30, 55, 0, time.UTC)
	requestedAt = time.Date(2024, 3, 21, 11, 30, 1, 0, time.UTC)
)

// rawPhones may never appear in a log line.
var rawPhones = []string{"254712345678", "254708374149", "254722000000", "254700000001"}

type testEnv struct {
	t    *testing.T
	ns   *natstest.Server
	srv  *httptest.Server
	logs *logtest.Buffer
	// handler is srv's handler, for a test that sends many requests, or
	// from many addresses, without a network between.
	handler http.Handler
}

// testSecret is the tests' CALLBACK_SECRET.
const testSecret = "callback-ingest-test-secret-0123456789abcdef"

var testSecrets = func() events.CallbackSecrets {
	s, err := events.ParseCallbackSecrets(testSecret)
	if err != nil {
		panic(err)
	}
	return s
}()

// tokenPath is what follows RoutePrefix in the CallBackURL the dispatcher
// gives for trackingID: "<id>/<token>" for a well-formed id (in any case),
// the id as it is otherwise.
func tokenPath(trackingID string) string {
	if u, err := uuid.Parse(trackingID); err == nil && len(trackingID) == 36 {
		return trackingID + "/" + testSecrets.Token(u.String())
	}
	return trackingID
}

func newEnv(t *testing.T, timeout time.Duration) *testEnv {
	t.Helper()
	return newEnvWith(t, Options{Timeout: timeout})
}

// newEnvWith serves a handler with o's Secrets (default testSecrets),
// Sources, Confirm and Timeout.
func newEnvWith(t *testing.T, o Options) *testEnv {
	t.Helper()
	ns := natstest.Start(t)
	if _, err := events.EnsureCallbackStream(context.Background(), ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	if o.Secrets.Len() == 0 {
		o.Secrets = testSecrets
	}
	o.JS, o.Stream, o.Conn = ns.JS, ns.Stream, ns.Conn
	o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o.Now = func() time.Time { return clock }
	h, err := NewHandler(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	// Every exchange through e.do is checked against openapi.yaml.
	srv.Client().Transport = openapitest.Load(t, OpenAPI).Transport(t, srv.Client().Transport)
	e := &testEnv{t: t, ns: ns, srv: srv, logs: logs, handler: h}
	t.Cleanup(e.checkLogs)
	return e
}

// checkLogs: every line is about a payment and carries its tracking id, and
// no phone number is logged in clear.
func (e *testEnv) checkLogs() {
	sc := bufio.NewScanner(strings.NewReader(e.logs.String()))
	for sc.Scan() {
		line := sc.Text()
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			e.t.Errorf("log line is not JSON: %s", line)
			continue
		}
		if _, ok := rec["tracking_id"]; !ok {
			e.t.Errorf("log line without tracking_id: %s", line)
		}
		for _, p := range rawPhones {
			if strings.Contains(line, p) {
				e.t.Errorf("log line has a raw phone number: %s", line)
			}
		}
	}
}

func payment(id string) events.Payment {
	return events.Payment{
		TrackingID:  id,
		Client:      "acme",
		Phone:       "254712345678",
		Amount:      1500,
		Reference:   "INV-2024-001",
		Tag:         "loan-repayment",
		RequestedAt: requestedAt,
	}
}

func (e *testEnv) publish(source string, ev events.Event) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p := events.Publisher{JS: e.ns.JS, Source: source}
	if _, err := p.Publish(ctx, ev); err != nil {
		e.t.Fatal(err)
	}
}

func (e *testEnv) request(p events.Payment) {
	e.t.Helper()
	e.publish("stkgate/api", events.Requested{Payment: p})
}

// requestDispatched publishes stk.requested and the stk.dispatched of a push
// whose callback is the success fixture.
func (e *testEnv) requestDispatched(p events.Payment) {
	e.t.Helper()
	e.request(p)
	e.dispatch(p, "6e86-45dd-91ac-fd5d4178ab523002867", successCheckoutID)
}

func (e *testEnv) dispatch(p events.Payment, merchantID, checkoutID string) {
	e.t.Helper()
	e.publish("stkgate/dispatcher", events.Dispatched{
		Payment:             p,
		MerchantRequestID:   merchantID,
		CheckoutRequestID:   checkoutID,
		ResponseDescription: "Success. Request accepted for processing",
	})
}

// post sends a callback the way Daraja does and returns the status and body.
func (e *testEnv) post(method, trackingID string, body io.Reader) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+RoutePrefix+tokenPath(trackingID), body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("BusinessShortCode", "174379")
	return e.do(req)
}

func (e *testEnv) get(path string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do(req)
}

func (e *testEnv) do(req *http.Request) (int, string) {
	e.t.Helper()
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		e.t.Errorf("Content-Type %q", ct)
	}
	return res.StatusCode, string(b)
}

// completed returns how many stk.completed the stream holds for id (for
// every id when id is ">") and the last one.
func (e *testEnv) completed(id string) (int, *jetstream.RawStreamMsg) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	subject := events.Subject(events.TypeCompleted, id)
	info, err := e.ns.Stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	if n == 0 || id == ">" {
		return n, nil
	}
	msg, err := e.ns.Stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		e.t.Fatal(err)
	}
	return n, msg
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "callbacks", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCallbackFixtures posts each fixture for a requested payment and reads
// back the one stk.completed it must produce.
func TestCallbackFixtures(t *testing.T) {
	t.Parallel()
	type outcome struct {
		resultCode, resultDesc, receipt, transactionDate, merchantID, checkoutID string
	}
	tests := []struct {
		fixture string
		phone   string
		amount  int64
		// dispatched: the dispatcher's event is in the stream first, as it
		// normally is; without it there is nothing to check against.
		dispatched bool
		want       outcome
	}{
		{"success", "254712345678", 1500, true, outcome{"0", "The service request is processed successfully.", "SCL4XQ2B7K", "2024-03-21 14:30:55", "6e86-45dd-91ac-fd5d4178ab523002867", "ws_CO_21032024143055123712345678"}},
		{"success-no-balance", "254708374149", 1, true, outcome{"0", "The service request is processed successfully.", "NLJ7RT61SV", "2019-12-19 10:21:15", "29115-34620561-1", "ws_CO_191220191020363925"}},
		{"success-reordered", "254722000000", 10, true, outcome{"0", "The service request is processed successfully.", "TF5AB12CDE", "2025-06-05 09:15:30", "a1f0-4c2e-8d7b-3e9f0c1d2b4a5678901", "ws_CO_05062025091502871722000000"}},
		{"cancelled", "254712345678", 1500, true, outcome{"1032", "Request cancelled by user", "", "", "f1e2-4a6b-9c8d-7e5f4a3b2c1d0987654", "ws_CO_21032024150102334712345678"}},
		{"expired", "254712345678", 1500, false, outcome{"1019", "Transaction has expired", "", "", "d5e6-4f7a-9b8c-1d2e3f4a5b6c7d8e9f0", "ws_CO_21032024153344990712345678"}},
		{"insufficient", "254712345678", 1500, true, outcome{"1", "The balance is insufficient for the transaction.", "", "", "b7c8-4d9e-8f0a-1b2c3d4e5f6a7b8c9d0", "ws_CO_21032024151210556712345678"}},
		{"prefixed-desc", "254712345678", 1500, true, outcome{"1036", "[STK_CB - ]SMSC ACK timeout.", "", "", "9f8e-4d7c-8b6a-5f4e3d2c1b0a9f8e7d6", "ws_CO_21032024155566334712345678"}},
		{"timeout", "254712345678", 1500, false, outcome{"1037", "DS timeout user cannot be reached", "", "", "c3d4-4e5f-8a9b-0c1d2e3f4a5b6c7d8e9", "ws_CO_21032024152233778712345678"}},
		{"wrong-pin", "254712345678", 1500, true, outcome{"2001", "The initiator information is invalid.", "", "", "e7f8-4a9b-8c0d-2e3f4a5b6c7d8e9f0a1", "ws_CO_21032024154455112712345678"}},
	}
	if n := len(fixtures(t)); n != len(tests) {
		t.Fatalf("%d fixtures, %d cases: every fixture needs one", n, len(tests))
	}
	e := newEnv(t, 0)
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			id := uuid.NewString()
			p := payment(id)
			p.Phone, p.Amount = tt.phone, tt.amount
			e.request(p)
			if tt.dispatched {
				e.dispatch(p, tt.want.merchantID, tt.want.checkoutID)
			}

			status, body := e.post(http.MethodPost, id, bytes.NewReader(readFixture(t, tt.fixture)))
			if status != http.StatusOK || body != bodyAccepted {
				t.Fatalf("answer %d %s, want 200 %s", status, body, bodyAccepted)
			}

			n, msg := e.completed(id)
			if n != 1 {
				t.Fatalf("%d stk.completed for %s, want 1", n, id)
			}
			if got, want := msg.Header.Get(jetstream.MsgIDHeader), id+":completed"; got != want {
				t.Errorf("Nats-Msg-Id %q, want %q", got, want)
			}
			env, ev, err := events.Decode(msg.Data)
			if err != nil {
				t.Fatal(err)
			}
			if env.Source != EventSource || env.Type != events.TypeCompleted || !env.Time.Equal(clock) {
				t.Errorf("envelope source %q type %q time %v", env.Source, env.Type, env.Time)
			}
			want := events.Completed{
				Payment:           p,
				ResultCode:        tt.want.resultCode,
				ResultDesc:        tt.want.resultDesc,
				Receipt:           tt.want.receipt,
				TransactionDate:   tt.want.transactionDate,
				Source:            events.SourceCallback,
				MerchantRequestID: tt.want.merchantID,
				CheckoutRequestID: tt.want.checkoutID,
				CompletedAt:       clock,
			}
			if diff := cmp.Diff(want, ev); diff != "" {
				t.Errorf("stk.completed (-want +got):\n%s", diff)
			}
		})
	}
	if n, _ := e.completed(">"); n != len(tests) {
		t.Errorf("%d stk.completed in the stream, want %d", n, len(tests))
	}
}

// TestCallbackRefused: what is not applied gets its exact answer and
// publishes nothing (TestCallbackKept checks that each is kept).
func TestCallbackRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	known := uuid.NewString()
	e.request(payment(known))
	otherPushID := uuid.NewString()
	e.request(payment(otherPushID))
	e.dispatch(payment(otherPushID), "6e86-45dd-91ac-fd5d4178ab523002867", "ws_CO_ANOTHER_PUSH")
	brokenID := uuid.NewString()
	if _, err := e.ns.JS.Publish(context.Background(), events.Subject(events.TypeRequested, brokenID), []byte(`{"not":"an envelope"}`)); err != nil {
		t.Fatal(err)
	}

	success := string(readFixture(t, "success"))
	tests := []struct {
		name     string
		path     string
		body     string
		status   int
		wantBody string
		wantLog  string
	}{
		// Kept for inspection, so taken: the same answer as for a known id.
		{"unknown tracking id", uuid.NewString(), success, 200, bodyAccepted, `"msg":"callback for an unknown tracking id"`},
		{"unknown tracking id logs the masked phone", uuid.NewString(), success, 200, bodyAccepted, `"phone":"*********678"`},
		{"not a UUID", "not-a-uuid", success, 404, bodyUnknownID, `"tracking_id":"not-a-uuid"`},
		{"UUID without dashes", strings.ReplaceAll(known, "-", ""), success, 404, bodyUnknownID, `"msg":"callback for a malformed tracking id"`},
		{"UUID in braces", "%7B" + known + "%7D", success, 404, bodyUnknownID, `"msg":"callback for a malformed tracking id"`},
		{"subject wildcard", "stk.%3E", success, 404, bodyUnknownID, `"msg":"callback for a malformed tracking id"`},
		{"empty tracking id", "", success, 404, bodyUnknownID, `"msg":"callback for a malformed tracking id"`},
		{"not JSON", known, "ResultCode=0", 400, `{"ResultCode":1,"ResultDesc":"Rejected: not JSON"}` + "\n", `"reason":"not JSON"`},
		{"empty body", known, "", 400, `{"ResultCode":1,"ResultDesc":"Rejected: not JSON"}` + "\n", `"msg":"callback rejected"`},
		{"success without receipt", known, strings.Replace(success, `"MpesaReceiptNumber"`, `"Receipt"`, 1), 400,
			`{"ResultCode":1,"ResultDesc":"Rejected: success without MpesaReceiptNumber"}` + "\n", `"reason":"success without MpesaReceiptNumber"`},
		{"amount not whole", known, strings.Replace(success, `1500.00`, `1500.50`, 1), 400,
			`{"ResultCode":1,"ResultDesc":"Rejected: amount not whole"}` + "\n", `"reason":"amount not whole"`},
		{"no CheckoutRequestID", known, `{"Body":{"stkCallback":{"ResultCode":1032}}}`, 400,
			`{"ResultCode":1,"ResultDesc":"Rejected: missing CheckoutRequestID"}` + "\n", `"reason":"missing CheckoutRequestID"`},
		{"callback for another push", otherPushID, success, 200, bodyAccepted, `"dispatched_checkout_request_id":"ws_CO_ANOTHER_PUSH"`},
		{"unreadable stored request", brokenID, success, 500, bodyInternal, `"msg":"stored stk.requested is unreadable"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.logs.String())
			status, body := e.post(http.MethodPost, tt.path, strings.NewReader(tt.body))
			if status != tt.status || body != tt.wantBody {
				t.Errorf("answer %d %s, want %d %s", status, body, tt.status, tt.wantBody)
			}
			if logs := e.logs.String()[before:]; !strings.Contains(logs, tt.wantLog) {
				t.Errorf("logs lack %s:\n%s", tt.wantLog, logs)
			}
			if n, _ := e.completed(">"); n != 0 {
				t.Errorf("%d stk.completed published, want none", n)
			}
		})
	}
}

// TestCallbackBodyLimit: 64 KiB is taken, one byte more is 413, whether the
// length is announced or not.
func TestCallbackBodyLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	fixture := readFixture(t, "success")
	padded := func(n int) []byte {
		f := []byte(freshReceipt(string(fixture)))
		return append(f, bytes.Repeat([]byte(" "), n-len(f))...)
	}
	// unsized hides the length, so the body arrives chunked.
	unsized := func(b []byte) io.Reader { return io.MultiReader(bytes.NewReader(b)) }
	tests := []struct {
		name     string
		body     io.Reader
		status   int
		wantBody string
	}{
		{"64 KiB", bytes.NewReader(padded(MaxBodyBytes)), 200, bodyAccepted},
		{"64 KiB chunked", unsized(padded(MaxBodyBytes)), 200, bodyAccepted},
		{"64 KiB + 1", bytes.NewReader(padded(MaxBodyBytes + 1)), 413, bodyTooLarge},
		{"64 KiB + 1 chunked", unsized(padded(MaxBodyBytes + 1)), 413, bodyTooLarge},
		{"1 MiB chunked", unsized(padded(1 << 20)), 413, bodyTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := uuid.NewString()
			e.requestDispatched(payment(id))
			status, body := e.post(http.MethodPost, id, tt.body)
			if status != tt.status || body != tt.wantBody {
				t.Errorf("answer %d %s, want %d %s", status, body, tt.status, tt.wantBody)
			}
			want := 0
			if tt.status == 200 {
				want = 1
			}
			if n, _ := e.completed(id); n != want {
				t.Errorf("%d stk.completed, want %d", n, want)
			}
		})
	}
}

// TestCallbackAnyMethodAndCase: Safaricom POSTs, but the route takes any
// method, and a tracking id in capitals is the same payment.
func TestCallbackAnyMethodAndCase(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	for _, method := range []string{http.MethodPut, http.MethodPatch} {
		id := uuid.NewString()
		e.request(payment(id))
		status, body := e.post(method, strings.ToUpper(id), bytes.NewReader(readFixture(t, "cancelled")))
		if status != 200 || body != bodyAccepted {
			t.Errorf("%s: answer %d %s", method, status, body)
		}
		if n, _ := e.completed(id); n != 1 {
			t.Errorf("%s: %d stk.completed on the lowercase subject, want 1", method, n)
		}
	}
}

// TestCallbackRepeated: a repeated callback is answered 200 each time and
// stored once, in sequence or all at once.
func TestCallbackRepeated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)

	t.Run("in sequence", func(t *testing.T) {
		body := []byte(freshReceipt(string(readFixture(t, "success"))))
		id := uuid.NewString()
		e.requestDispatched(payment(id))
		for i := range 2 {
			if status, got := e.post(http.MethodPost, id, bytes.NewReader(body)); status != 200 || got != bodyAccepted {
				t.Errorf("post %d: answer %d %s", i+1, status, got)
			}
		}
		if n, _ := e.completed(id); n != 1 {
			t.Errorf("%d stk.completed, want 1", n)
		}
		if !strings.Contains(e.logs.String(), `"msg":"repeated callback: the outcome is already stored"`) {
			t.Error("the repeat was not logged")
		}
	})

	t.Run("concurrently", func(t *testing.T) {
		body := []byte(freshReceipt(string(readFixture(t, "success"))))
		id := uuid.NewString()
		e.requestDispatched(payment(id))
		const copies = 8
		var wg sync.WaitGroup
		answers := make(chan string, copies)
		for range copies {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodPost, e.srv.URL+RoutePrefix+tokenPath(id), bytes.NewReader(body))
				res, err := e.srv.Client().Do(req)
				if err != nil {
					answers <- err.Error()
					return
				}
				defer res.Body.Close()
				b, _ := io.ReadAll(res.Body)
				answers <- res.Status + " " + string(b)
			})
		}
		wg.Wait()
		close(answers)
		for a := range answers {
			if a != "200 OK "+bodyAccepted {
				t.Errorf("answer %q", a)
			}
		}
		if n, _ := e.completed(id); n != 1 {
			t.Errorf("%d stk.completed, want 1", n)
		}
	})
}

// TestCallbackConflict: once a payment has its outcome, a callback that says
// otherwise is not published, but it is logged for reconciliation.
func TestCallbackConflict(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	p := payment(id)
	e.request(p)
	stored := events.Completed{
		Payment:     p,
		ResultCode:  "1037",
		ResultDesc:  "No response from user.",
		Source:      events.SourceQuery,
		CompletedAt: requestedAt.Add(3 * time.Minute),
	}
	e.publish("stkgate/reconciler", stored)

	status, body := e.post(http.MethodPost, id, bytes.NewReader(readFixture(t, "success")))
	if status != 200 || body != bodyAccepted {
		t.Errorf("answer %d %s", status, body)
	}
	n, msg := e.completed(id)
	if n != 1 {
		t.Fatalf("%d stk.completed, want the stored one only", n)
	}
	_, ev, err := events.Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(events.Event(stored), ev); diff != "" {
		t.Errorf("stored outcome changed (-want +got):\n%s", diff)
	}
	logs := e.logs.String()
	for _, want := range []string{`"level":"ERROR"`, `"msg":"callback conflicts with the stored outcome; callback not published"`,
		`"stored_result_code":"1037"`, `"receipt":"SCL4XQ2B7K"`, `"result_code":"0"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}

// TestCallbackConfirmation: a success callback that disagrees with the
// request (or, with CALLBACK_CONFIRM=always, any success) publishes nothing:
// it is kept on stkcb.confirm.<id> for the reconciler to confirm through
// Daraja's STK query. With CALLBACK_CONFIRM=never it counts as it stands,
// with the request's payment, and the disagreement is logged.
func TestCallbackConfirmation(t *testing.T) {
	t.Parallel()
	success := string(readFixture(t, "success")) // 1500 KES from 254712345678
	cancelled := string(readFixture(t, "cancelled"))
	noAmount := strings.Replace(success, `{"Name":"Amount","Value":1500.00},`, "", 1)
	noPhone := strings.Replace(success, `,{"Name":"PhoneNumber","Value":254712345678}`, "", 1)
	maskedPhone := strings.Replace(success, `254712345678}`, `"2547****5678"}`, 1)
	if noAmount == success || noPhone == success || maskedPhone == success {
		t.Fatal("the success fixture changed: a variant is the fixture itself")
	}
	tests := []struct {
		name    string
		mode    string
		amount  int64
		phone   string
		body    string
		reason  string // the copy's reason on stkcb.confirm.<id>; "" when published
		wantLog []string
		// undispatched: no stk.dispatched yet, so the CheckoutRequestID
		// cannot be checked.
		undispatched bool
	}{
		{"agreeing success", "", 1500, "254712345678", success, "", nil, false},
		{"amount differs", "mismatch", 1000, "254712345678", success, events.ConfirmAmountMismatch,
			[]string{`"msg":"callback amount differs from the request"`, `"requested_amount":1000`, `"callback_amount":1500`}, false},
		{"phone differs", "", 1500, "254700000001", success, events.ConfirmPhoneMismatch,
			[]string{`"msg":"callback phone differs from the request"`, `"requested_phone":"*********001"`, `"callback_phone":"*********678"`}, false},
		{"success without amount", "mismatch", 1500, "254712345678", noAmount, events.ConfirmNoAmount,
			[]string{`"msg":"successful callback without an amount"`}, false},
		// A phone that cannot be compared is no proof of agreement.
		{"success without phone", "mismatch", 1500, "254712345678", noPhone, events.ConfirmNoPhone,
			[]string{`"msg":"success callback without a phone number that can be compared with the request's"`}, false},
		{"success with a masked phone", "", 1500, "254712345678", maskedPhone, events.ConfirmNoPhone, nil, false},
		{"never: success without phone", "never", 1500, "254712345678", noPhone, "",
			[]string{`"confirm_reason":"confirm_no_phone"`}, false},
		{"failure counts as it stands", "mismatch", 1000, "254700000001", cancelled, "", nil, false},
		{"always: agreeing success", "always", 1500, "254712345678", success, events.ConfirmAlways, nil, false},
		{"always: failure counts as it stands", "always", 1500, "254712345678", cancelled, "", nil, false},
		{"never: amount differs", "never", 1000, "254712345678", success, "",
			[]string{`"msg":"success callback disagrees with the request; CALLBACK_CONFIRM=never counts it as it stands"`,
				`"confirm_reason":"confirm_amount_mismatch"`}, false},
		// Daraja's answer to the push may have been lost: there is no
		// CheckoutRequestID to query, and the callback is all there is.
		{"agreeing success before stk.dispatched counts", "", 1500, "254712345678", success, "",
			[]string{`"msg":"callback before stk.dispatched"`}, true},
		{"failure before stk.dispatched counts", "", 1500, "254712345678", cancelled, "", nil, true},
		{"amount differs before stk.dispatched", "", 1000, "254712345678", success, events.ConfirmAmountMismatch, nil, true},
	}
	envs := map[string]*testEnv{}
	for _, tt := range tests {
		if envs[tt.mode] == nil {
			envs[tt.mode] = newEnvWith(t, Options{Confirm: tt.mode})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := envs[tt.mode]
			tt.body = freshReceipt(tt.body)
			id := uuid.NewString()
			p := payment(id)
			p.Amount, p.Phone = tt.amount, tt.phone
			e.request(p)
			cb, err := ParseCallback([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.undispatched {
				e.dispatch(p, cb.MerchantRequestID, cb.CheckoutRequestID)
			}
			before, logsBefore := e.lastKept(), len(e.logs.String())

			status, body := e.post(http.MethodPost, id, strings.NewReader(tt.body))
			if status != 200 || body != bodyAccepted {
				t.Fatalf("answer %d %s", status, body)
			}
			kept, _, _ := e.keptSince(before)
			if len(kept) != 1 {
				t.Fatalf("%d copies kept, want 1", len(kept))
			}
			n, msg := e.completed(id)
			if tt.reason != "" {
				if kept[0].Subject != events.CallbackSubjectConfirm(id) || kept[0].Headers[events.CallbackHeaderReason] != tt.reason {
					t.Errorf("kept on %s (reason %q), want %s (reason %q)", kept[0].Subject,
						kept[0].Headers[events.CallbackHeaderReason], events.CallbackSubjectConfirm(id), tt.reason)
				}
				if kept[0].Body != tt.body {
					t.Error("the kept copy is not the callback as received")
				}
				// Neither its receipt nor its amount may become the outcome.
				if n != 0 {
					t.Fatalf("%d stk.completed published for a callback awaiting confirmation, want none", n)
				}
				tt.wantLog = append(tt.wantLog, `"msg":"callback held for confirmation by Daraja's STK query: nothing published"`)
			} else {
				if kept[0].Subject != events.CallbackSubjectReceived(id) {
					t.Errorf("kept on %s, want %s", kept[0].Subject, events.CallbackSubjectReceived(id))
				}
				if n != 1 {
					t.Fatalf("%d stk.completed, want 1", n)
				}
				_, ev, err := events.Decode(msg.Data)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(p, ev.Base()); diff != "" {
					t.Errorf("published payment is not the request's (-want +got):\n%s", diff)
				}
			}
			logs := e.logs.String()[logsBefore:]
			for _, want := range tt.wantLog {
				if !strings.Contains(logs, want) {
					t.Errorf("logs lack %s:\n%s", want, logs)
				}
			}
		})
	}
}

// TestCallbackPublishRefused: when JetStream does not store the event the
// answer is 503, and the same callback is taken once it can be.
func TestCallbackPublishRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.requestDispatched(payment(id))

	ctx := context.Background()
	full := events.StreamConfig(1)
	full.MaxMsgs = 1
	full.Discard = jetstream.DiscardNew
	if _, err := e.ns.JS.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	body := readFixture(t, "success")
	if status, got := e.post(http.MethodPost, id, bytes.NewReader(body)); status != 503 || got != bodyUnavailable {
		t.Errorf("answer %d %s, want 503 %s", status, got, bodyUnavailable)
	}
	if n, _ := e.completed(id); n != 0 {
		t.Errorf("%d stk.completed, want none", n)
	}
	if !strings.Contains(e.logs.String(), `"msg":"publish stk.completed"`) {
		t.Errorf("the failed publish was not logged:\n%s", e.logs.String())
	}

	if _, err := e.ns.JS.UpdateStream(ctx, events.StreamConfig(1)); err != nil {
		t.Fatal(err)
	}
	if status, got := e.post(http.MethodPost, id, bytes.NewReader(body)); status != 200 || got != bodyAccepted {
		t.Errorf("after the stream took messages again: answer %d %s", status, got)
	}
	if n, _ := e.completed(id); n != 1 {
		t.Errorf("%d stk.completed, want 1", n)
	}
}

// TestCallbackStreamDeleted: a missing stream is an outage, not an unknown
// payment.
func TestCallbackStreamDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, time.Second)
	id := uuid.NewString()
	e.request(payment(id))
	if err := e.ns.JS.DeleteStream(context.Background(), events.StreamName); err != nil {
		t.Fatal(err)
	}
	if status, got := e.post(http.MethodPost, id, bytes.NewReader(readFixture(t, "success"))); status != 503 || got != bodyUnavailable {
		t.Errorf("answer %d %s, want 503 %s", status, got, bodyUnavailable)
	}
}

// TestCallbackNATSDown: with the server gone the answer is 503 and /readyz
// says not ready, while /healthz (the process) is fine.
func TestCallbackNATSDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 500*time.Millisecond)
	id := uuid.NewString()
	e.request(payment(id))
	if status, body := e.get("/readyz"); status != 200 || body != `{"status":"ready"}`+"\n" {
		t.Errorf("readyz %d %s", status, body)
	}

	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	deadline := time.Now().Add(10 * time.Second)
	for e.ns.Conn.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if status, body := e.get("/readyz"); status != 503 || !strings.HasPrefix(body, `{"reason":"nats `) || !strings.Contains(body, `"status":"not ready"`) {
		t.Errorf("readyz %d %s, want 503 not ready", status, body)
	}
	if status, body := e.get("/healthz"); status != 200 || body != `{"status":"ok"}`+"\n" {
		t.Errorf("healthz %d %s", status, body)
	}
	if status, got := e.post(http.MethodPost, id, bytes.NewReader(readFixture(t, "success"))); status != 503 || got != bodyUnavailable {
		t.Errorf("answer %d %s, want 503 %s", status, got, bodyUnavailable)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	for path, want := range map[string]string{
		"/healthz": `{"status":"ok"}` + "\n",
		"/readyz":  `{"status":"ready"}` + "\n",
	} {
		if status, body := e.get(path); status != 200 || body != want {
			t.Errorf("%s: %d %s, want 200 %s", path, status, body, want)
		}
	}
}

func TestNewHandlerNeedsNATS(t *testing.T) {
	t.Parallel()
	if _, err := NewHandler(Options{}); err == nil {
		t.Error("NewHandler without JetStream: no error")
	}
}

// logtest.Buffer collects log lines written from concurrent requests.
// TestCallbackUnreadableStoredEvents: an event in the stream that does not
// decode is our fault, and never a reason to publish a second outcome.
func TestCallbackUnreadableStoredEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	garbage := func(typ, id string) {
		t.Helper()
		if _, err := e.ns.JS.Publish(context.Background(), events.Subject(typ, id), []byte(`{"specversion":"0.3"}`)); err != nil {
			t.Fatal(err)
		}
	}
	body := readFixture(t, "success")

	t.Run("stk.dispatched", func(t *testing.T) {
		id := uuid.NewString()
		e.request(payment(id))
		garbage(events.TypeDispatched, id)
		if status, got := e.post(http.MethodPost, id, bytes.NewReader(body)); status != 500 || got != bodyInternal {
			t.Errorf("answer %d %s, want 500 %s", status, got, bodyInternal)
		}
		if n, _ := e.completed(id); n != 0 {
			t.Errorf("%d stk.completed, want none", n)
		}
	})

	t.Run("stk.completed", func(t *testing.T) {
		id := uuid.NewString()
		e.request(payment(id))
		garbage(events.TypeCompleted, id)
		if status, got := e.post(http.MethodPost, id, bytes.NewReader(body)); status != 200 || got != bodyAccepted {
			t.Errorf("answer %d %s, want 200 %s", status, got, bodyAccepted)
		}
		if n, _ := e.completed(id); n != 1 {
			t.Errorf("%d stk.completed, want the unreadable one only", n)
		}
		logs := e.logs.String()
		for _, want := range []string{`"msg":"stored stk.completed is unreadable; callback not published"`, `"receipt":"SCL4XQ2B7K"`} {
			if !strings.Contains(logs, want) {
				t.Errorf("logs lack %s:\n%s", want, logs)
			}
		}
	})
}
