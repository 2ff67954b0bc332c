package daraja_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stkgate/stkgate/dispatcher/daraja"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestPasswordAndTimestamp(t *testing.T) {
	// The value in Daraja's own documentation for the sandbox.
	const docPassword = "MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJhZGExZWQyYzkxOTIwMTYwMjE2MTY1NjI3"
	if got := daraja.Password("174379", testPassKey, "20160216165627"); got != docPassword {
		t.Errorf("Password = %s, want %s", got, docPassword)
	}
	decoded, err := base64.StdEncoding.DecodeString(daraja.Password("600000", "key", "20240101000000"))
	if err != nil || string(decoded) != "600000key20240101000000" {
		t.Errorf("Password decodes to %q, %v", decoded, err)
	}

	newYork := time.FixedZone("EST", -5*3600)
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Date(2024, 3, 21, 11, 30, 55, 0, time.UTC), "20240321143055"},
		{time.Date(2024, 12, 31, 22, 15, 0, 0, time.UTC), "20250101011500"}, // the date turns in Nairobi
		{time.Date(2024, 7, 1, 2, 3, 4, 999, newYork), "20240701100304"},
		{time.Date(2024, 7, 1, 10, 3, 4, 0, daraja.Nairobi()), "20240701100304"},
	}
	for _, tt := range tests {
		if got := daraja.Timestamp(tt.in); got != tt.want {
			t.Errorf("Timestamp(%v) = %s, want %s", tt.in, got, tt.want)
		}
		back, err := daraja.ParseTimestamp(tt.want)
		if err != nil || !back.Equal(tt.in.Truncate(time.Second)) {
			t.Errorf("ParseTimestamp(%s) = %v, %v; want %v", tt.want, back, err, tt.in)
		}
	}
}

func TestNewValidates(t *testing.T) {
	ok := testConfig("https://sandbox.safaricom.co.ke")
	tests := []struct {
		name   string
		change func(*daraja.Config)
		want   string // in the error; "" means valid
	}{
		{"valid", func(*daraja.Config) {}, ""},
		{"valid buy goods", func(c *daraja.Config) { c.TransactionType = daraja.TransactionBuyGoods; c.PartyB = "5432101" }, ""},
		{"base relative", func(c *daraja.Config) { c.BaseURL = "sandbox.safaricom.co.ke" }, "BaseURL"},
		{"base ftp", func(c *daraja.Config) { c.BaseURL = "ftp://sandbox.safaricom.co.ke" }, "BaseURL"},
		{"base with query", func(c *daraja.Config) { c.BaseURL = "https://x.example?a=1" }, "BaseURL"},
		{"base with user", func(c *daraja.Config) { c.BaseURL = "https://u:p@x.example" }, "BaseURL"},
		{"no key", func(c *daraja.Config) { c.ConsumerKey = "" }, "ConsumerKey"},
		{"key with colon", func(c *daraja.Config) { c.ConsumerKey = "a:b" }, "ConsumerKey"},
		{"no secret", func(c *daraja.Config) { c.ConsumerSecret = "" }, "ConsumerSecret"},
		{"short code 4 digits", func(c *daraja.Config) { c.ShortCode = "1743" }, "ShortCode"},
		{"short code 8 digits", func(c *daraja.Config) { c.ShortCode = "17437912" }, "ShortCode"},
		{"short code letters", func(c *daraja.Config) { c.ShortCode = "17437a" }, "ShortCode"},
		{"no passkey", func(c *daraja.Config) { c.PassKey = "" }, "PassKey"},
		{"transaction type", func(c *daraja.Config) { c.TransactionType = "PayBill" }, "TransactionType"},
		{"buy goods without till", func(c *daraja.Config) { c.TransactionType = daraja.TransactionBuyGoods }, "PartyB"},
		{"party b letters", func(c *daraja.Config) { c.PartyB = "till" }, "PartyB"},
		{"negative timeout", func(c *daraja.Config) { c.Timeout = -time.Second }, "Timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.change(&cfg)
			_, err := daraja.New(cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("New: %v, want an error naming %s", err, tt.want)
			}
			if err != nil {
				noSecrets(t, err.Error())
			}
		})
	}
}

func TestConfigLogValueMasksSecrets(t *testing.T) {
	cfg := testConfig("https://sandbox.safaricom.co.ke")
	got := cfg.LogValue().String()
	noSecrets(t, got, testKey)
	if !strings.Contains(got, testShort) {
		t.Errorf("LogValue %s lacks the shortcode", got)
	}
}

// TestPushRequestGolden pins the push request: method, path, headers and
// the exact body.
func TestPushRequestGolden(t *testing.T) {
	s := newStub(t, nil, replyJSON(http.StatusOK, fixture(t, "push-accepted.json")))
	cfg := testConfig(s.URL)
	cfg.Now = func() time.Time { return fixedNow }
	c := newClient(t, cfg)
	req := validPush()
	req.CallbackURL = "https://pay.example.com/hooks/stk-push/550e8400?a=1&b=2"
	if _, err := c.Push(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	reqs := s.apiRequests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPost || r.Path != daraja.PathPush {
		t.Errorf("request %s %s", r.Method, r.Path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if a := r.Header.Get("Authorization"); a != "Bearer c9SQxWWhmdVRlyh0zh8gZDTkubVF" {
		t.Errorf("Authorization %q", a)
	}
	golden(t, "push-request.golden.json", r.Body)

	var oauth request
	for _, rr := range s.requests {
		if rr.Path == daraja.PathOAuth {
			oauth = rr
		}
	}
	wantBasic := "Basic " + base64.StdEncoding.EncodeToString([]byte(testKey+":"+testSecret))
	if oauth.Method != http.MethodGet || oauth.Header.Get("Authorization") != wantBasic || len(oauth.Body) != 0 {
		t.Errorf("OAuth request %s, Authorization %q, body %q", oauth.Method, oauth.Header.Get("Authorization"), oauth.Body)
	}
}

func TestQueryRequestGolden(t *testing.T) {
	s := newStub(t, nil, replyJSON(http.StatusOK, fixture(t, "query-final.json")))
	cfg := testConfig(s.URL)
	cfg.Now = func() time.Time { return fixedNow }
	c := newClient(t, cfg)
	if _, err := c.Query(context.Background(), "ws_CO_1007202409152617172396192"); err != nil {
		t.Fatal(err)
	}
	reqs := s.apiRequests()
	if len(reqs) != 1 || reqs[0].Path != daraja.PathQuery || reqs[0].Header.Get("Content-Type") != "application/json" {
		t.Fatalf("requests %+v", reqs)
	}
	golden(t, "query-request.golden.json", reqs[0].Body)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, append(bytes.Clone(got), '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(bytes.TrimRight(want, "\n")), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", name, diff)
	}
}

func TestPushTransactionDesc(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "Payment"},
		{"   ", "Payment"},
		{"School fees", "School fees"},
		{"Thirteen char", "Thirteen char"},
		{"Much longer than thirteen", "Much longer t"},
		{"Ada\nLovelace", "AdaLovelace"},
		{"ÜberÜberÜberÜber", "ÜberÜberÜber\u00dc"},
	}
	for _, tt := range tests {
		s := newStub(t, nil, replyJSON(http.StatusOK, fixture(t, "push-accepted.json")))
		c := newClient(t, testConfig(s.URL))
		req := validPush()
		req.TransactionDesc = tt.in
		if _, err := c.Push(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		var body struct{ TransactionDesc string }
		if err := json.Unmarshal(s.apiRequests()[0].Body, &body); err != nil {
			t.Fatal(err)
		}
		if body.TransactionDesc != tt.want {
			t.Errorf("TransactionDesc %q sent as %q, want %q", tt.in, body.TransactionDesc, tt.want)
		}
	}
}

func TestPushRefusesInvalidInputWithoutCalling(t *testing.T) {
	s := newStub(t, nil, replyJSON(http.StatusOK, fixture(t, "push-accepted.json")))
	c := newClient(t, testConfig(s.URL))
	tests := []struct {
		name   string
		change func(*daraja.PushRequest)
		field  string
	}{
		{"phone 07", func(r *daraja.PushRequest) { r.Phone = "0712345678" }, "PhoneNumber"},
		{"phone +254", func(r *daraja.PushRequest) { r.Phone = "+254712345678" }, "PhoneNumber"},
		{"phone 11 digits", func(r *daraja.PushRequest) { r.Phone = "25471234567" }, "PhoneNumber"},
		{"phone 13 digits", func(r *daraja.PushRequest) { r.Phone = "2547123456789" }, "PhoneNumber"},
		{"phone 2548", func(r *daraja.PushRequest) { r.Phone = "254812345678" }, "PhoneNumber"},
		{"phone letters", func(r *daraja.PushRequest) { r.Phone = "2547123456ab" }, "PhoneNumber"},
		{"amount 0", func(r *daraja.PushRequest) { r.Amount = 0 }, "Amount"},
		{"amount negative", func(r *daraja.PushRequest) { r.Amount = -5 }, "Amount"},
		{"amount over cap", func(r *daraja.PushRequest) { r.Amount = 250001 }, "Amount"},
		{"reference empty", func(r *daraja.PushRequest) { r.AccountReference = "" }, "AccountReference"},
		{"reference blank", func(r *daraja.PushRequest) { r.AccountReference = "   " }, "AccountReference"},
		{"reference 13", func(r *daraja.PushRequest) { r.AccountReference = "INV-2024-0001" }, "AccountReference"},
		{"reference control", func(r *daraja.PushRequest) { r.AccountReference = "INV\n1" }, "AccountReference"},
		{"callback relative", func(r *daraja.PushRequest) { r.CallbackURL = "/hooks/stk-push/1" }, "CallBackURL"},
		{"callback ftp", func(r *daraja.PushRequest) { r.CallbackURL = "ftp://pay.example.com/x" }, "CallBackURL"},
		{"callback uppercase host", func(r *daraja.PushRequest) { r.CallbackURL = "https://Pay.Example.com/x" }, "CallBackURL"},
		{"callback mpesa", func(r *daraja.PushRequest) { r.CallbackURL = "https://pay.example.com/mpesa/x" }, "CallBackURL"},
		{"callback credentials", func(r *daraja.PushRequest) { r.CallbackURL = "https://u:p@pay.example.com/x" }, "CallBackURL"},
		{"callback empty", func(r *daraja.PushRequest) { r.CallbackURL = "" }, "CallBackURL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validPush()
			tt.change(&req)
			_, err := c.Push(context.Background(), req)
			e := asError(t, err)
			if e.Kind != daraja.KindRefused || e.Code != daraja.CodeInvalidRequest || !strings.Contains(e.Message, tt.field) {
				t.Errorf("error %v: want refused %s naming %s", err, daraja.CodeInvalidRequest, tt.field)
			}
			if daraja.KindOf(err) != daraja.KindRefused {
				t.Errorf("KindOf = %v", daraja.KindOf(err))
			}
			noSecrets(t, err.Error(), "0712345678", "+254712345678")
		})
	}
	if n := s.oauthCalls.Load() + s.apiCalls.Load(); n != 0 {
		t.Errorf("Daraja was called %d times for invalid pushes", n)
	}
	// The limits themselves are accepted.
	for _, req := range []daraja.PushRequest{
		{Phone: "254112345678", Amount: 1, AccountReference: "A", CallbackURL: "http://127.0.0.1:8081/hooks/stk-push/x"},
		{Phone: testPhone, Amount: 250000, AccountReference: "INV-2024-001", CallbackURL: testCB},
	} {
		if _, err := c.Push(context.Background(), req); err != nil {
			t.Errorf("Push(%+v): %v", req, err)
		}
	}
	if _, err := c.Query(context.Background(), ""); daraja.KindOf(err) != daraja.KindRefused {
		t.Errorf("Query(\"\") = %v, want a refusal", err)
	}
}

// pushCase is one answer to a push and what the client must make of it.
type pushCase struct {
	name       string
	answer     http.HandlerFunc
	kind       daraja.Kind
	status     int
	code       string
	requestID  string // "-": none kept
	message    string // substring of Error.Message
	uncertain  bool
	retryAfter time.Duration // the least RetryAfter
	apiCalls   int64         // pushes sent; 0 means 1
}

func pushCases(t *testing.T) []pushCase {
	env := func(code, msg string) []byte {
		return []byte(`{"requestId":"req-1","errorCode":"` + code + `","errorMessage":"` + msg + `"}`)
	}
	html := []byte("<html><head><title>Error</title></head><body>gateway</body></html>")
	return []pushCase{
		{name: "invalid phone fixture", answer: replyJSON(400, fixture(t, "push-invalid-phone.json")), kind: daraja.KindRefused,
			status: 400, code: "400.002.02", requestID: "c6d1-4e2b-9f3a-8a7d6e5f4c3b2a19", message: "Invalid PhoneNumber"},
		{name: "spike arrest fixture", answer: replyJSON(500, fixture(t, "spike-arrest.json")), kind: daraja.KindTransient,
			status: 500, code: "500.003.02", retryAfter: daraja.RetryAfterSpikeArrest},
		{name: "subscriber locked fixture", answer: replyJSON(500, fixture(t, "subscriber-locked.json")), kind: daraja.KindLocked,
			status: 500, code: "500.001.1001", requestID: "ws_CO_1007202409152617172396193", retryAfter: time.Minute},
		{name: "invalid token fixture twice", answer: replyJSON(404, fixture(t, "invalid-token.json")), kind: daraja.KindTransient,
			status: 404, code: "404.001.03", apiCalls: 2},
		{name: "invalid token 401.002.01 twice", answer: replyJSON(401, env("401.002.01", "Error Occurred - Invalid Access Token")),
			kind: daraja.KindTransient, status: 401, code: "401.002.01", apiCalls: 2},
		{name: "401 without body twice", answer: reply(401, "", nil), kind: daraja.KindTransient, status: 401, code: "http.401", apiCalls: 2},
		{name: "merchant does not exist", answer: replyJSON(500, env("500.001.1001", "Merchant does not exist")),
			kind: daraja.KindRefused, status: 500, code: "500.001.1001"},
		{name: "wrong credentials", answer: replyJSON(500, env("500.001.1001", "Wrong credentials")),
			kind: daraja.KindRefused, status: 500, code: "500.001.1001"},
		{name: "unknown 500.001.1001 message", answer: replyJSON(500, env("500.001.1001", "Something else")),
			kind: daraja.KindAmbiguous, status: 500, code: "500.001.1001"},
		{name: "quota violation", answer: replyJSON(500, env("500.003.03", "Error Occurred: Quota Violation")),
			kind: daraja.KindTransient, status: 500, code: "500.003.03", retryAfter: daraja.RetryAfterQuota},
		{name: "spike arrest with Retry-After", answer: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "7")
			replyJSON(500, fixture(t, "spike-arrest.json"))(w, r)
		}, kind: daraja.KindTransient, status: 500, code: "500.003.02", retryAfter: 7 * time.Second},
		{name: "internal error", answer: replyJSON(500, env("500.003.1001", "Internal Server Error")),
			kind: daraja.KindAmbiguous, status: 500, code: "500.003.1001"},
		{name: "other bad request", answer: replyJSON(400, env("400.002.05", "Invalid Request Payload")),
			kind: daraja.KindRefused, status: 400, code: "400.002.05"},
		{name: "403 html", answer: reply(403, "text/html", html), kind: daraja.KindRefused, status: 403, code: "http.403"},
		{name: "404 proxy html", answer: reply(404, "text/html", html), kind: daraja.KindRefused, status: 404, code: "http.404"},
		{name: "redirect", answer: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example/", http.StatusMovedPermanently)
		}, kind: daraja.KindRefused, status: 301, code: "http.301"},
		{name: "503 html", answer: reply(503, "text/html", html), kind: daraja.KindTransient, status: 503, code: "http.503", retryAfter: daraja.RetryAfterGateway, uncertain: true},
		{name: "503 envelope", answer: replyJSON(503, env("503.001.01", "Service Unavailable")), kind: daraja.KindTransient, status: 503, code: "503.001.01", uncertain: true},
		{name: "503 internal error envelope", answer: replyJSON(503, env("500.003.1001", "Internal Server Error")), kind: daraja.KindAmbiguous, status: 503, code: "500.003.1001"},
		{name: "429 gateway fault", answer: replyJSON(429, []byte(`{"fault":{"faultstring":"Spike arrest violation","detail":{"errorcode":"policies.ratelimit.SpikeArrestViolation"}}}`)),
			kind: daraja.KindTransient, status: 429, code: "policies.ratelimit.SpikeArrestViolation", retryAfter: daraja.RetryAfterGateway},
		{name: "500 gateway spike fault", answer: replyJSON(500, []byte(`{"fault":{"faultstring":"Spike arrest violation","detail":{"errorcode":"policies.ratelimit.SpikeArrestViolation"}}}`)),
			kind: daraja.KindTransient, status: 500, code: "policies.ratelimit.SpikeArrestViolation"},
		{name: "408", answer: reply(408, "text/plain", []byte("timeout")), kind: daraja.KindTransient, status: 408, code: "http.408"},
		{name: "500 html", answer: reply(500, "text/html", html), kind: daraja.KindAmbiguous, status: 500, code: "http.500"},
		{name: "502 html", answer: reply(502, "text/html", html), kind: daraja.KindAmbiguous, status: 502, code: "http.502"},
		{name: "504 empty", answer: reply(504, "", nil), kind: daraja.KindAmbiguous, status: 504, code: "http.504"},
		{name: "200 ResponseCode 1", answer: replyJSON(200, []byte(`{"MerchantRequestID":"m","CheckoutRequestID":"","ResponseCode":"1","ResponseDescription":"Rejected"}`)),
			kind: daraja.KindRefused, status: 200, code: "1", message: "Rejected"},
		{name: "200 html", answer: reply(200, "text/html", html), kind: daraja.KindAmbiguous, status: 200, code: daraja.CodeBadResponse},
		{name: "200 without CheckoutRequestID", answer: replyJSON(200, []byte(`{"ResponseCode":"0"}`)),
			kind: daraja.KindAmbiguous, status: 200, code: daraja.CodeBadResponse},
		{name: "200 with error envelope", answer: replyJSON(200, fixture(t, "push-invalid-phone.json")),
			kind: daraja.KindRefused, status: 200, code: "400.002.02"},
		{name: "200 empty", answer: reply(200, "application/json", nil), kind: daraja.KindAmbiguous, status: 200, code: daraja.CodeBadResponse},
		{name: "NUL and escapes in errorMessage", answer: replyJSON(400, env("400.002.02", `Bad Request - Invalid PhoneNumber\u0000\u0001\r\n\u001b[0m`)),
			kind: daraja.KindRefused, status: 400, code: "400.002.02", requestID: "req-1", message: "Bad Request - Invalid PhoneNumber"},
		{name: "invalid UTF-8 in errorMessage", answer: replyJSON(400, []byte("{\"errorCode\":\"400.002.02\",\"errorMessage\":\"Invalid \xff\xfe field\"}")),
			kind: daraja.KindRefused, status: 400, code: "400.002.02", message: "Invalid \ufffd\ufffd field"},
		{name: "long errorMessage cut", answer: replyJSON(400, env("400.002.02", strings.Repeat("x", 5000))),
			kind: daraja.KindRefused, status: 400, code: "400.002.02", message: strings.Repeat("x", 256)},
		{name: "insane requestId dropped", answer: replyJSON(400, []byte(`{"requestId":"a\u0000b","errorCode":"400.002.02","errorMessage":"Bad Request - Invalid Amount"}`)),
			kind: daraja.KindRefused, status: 400, code: "400.002.02", requestID: "-"},
		{name: "errorCode 0 on a refusal", answer: replyJSON(400, env("0", "Bad Request")), kind: daraja.KindRefused, status: 400, code: "http.400"},
		{name: "errorCode 0.0 on a 500", answer: replyJSON(500, []byte(`{"errorCode":0.0,"errorMessage":"odd"}`)), kind: daraja.KindAmbiguous, status: 500, code: "http.500"},
		{name: "errorCode with a NUL", answer: replyJSON(400, env(`400\u0000.002`, "Bad")), kind: daraja.KindRefused, status: 400, code: "http.400"},
		{name: "fault errorcode too long", answer: replyJSON(429, []byte(`{"fault":{"faultstring":"slow down","detail":{"errorcode":"`+strings.Repeat("p", 200)+`"}}}`)),
			kind: daraja.KindTransient, status: 429, code: "http.429", message: "slow down"},
		{name: "200 ResponseCode 00 without CheckoutRequestID", answer: replyJSON(200, []byte(`{"ResponseCode":"00","ResponseDescription":"ok"}`)),
			kind: daraja.KindAmbiguous, status: 200, code: daraja.CodeBadResponse},
		{name: "200 ResponseCode with a NUL", answer: replyJSON(200, []byte(`{"CheckoutRequestID":"ws_CO_1","ResponseCode":"0\u0000"}`)),
			kind: daraja.KindAmbiguous, status: 200, code: daraja.CodeBadResponse},
		{name: "200 accepted with an insane CheckoutRequestID", answer: replyJSON(200, []byte(`{"MerchantRequestID":"m","CheckoutRequestID":"ws_CO_\u00001","ResponseCode":"0"}`)),
			kind: daraja.KindAmbiguous, status: 200, code: daraja.CodeBadResponse, message: "CheckoutRequestID"},
		{name: "200 accepted with a too long CheckoutRequestID", answer: replyJSON(200, []byte(`{"CheckoutRequestID":"ws_CO_`+strings.Repeat("1", 200)+`","ResponseCode":"0"}`)),
			kind: daraja.KindAmbiguous, status: 200, code: daraja.CodeBadResponse, message: "CheckoutRequestID"},
	}
}

func TestPushErrorClasses(t *testing.T) {
	for _, tt := range pushCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			s := newStub(t, nil, tt.answer)
			c := newClient(t, testConfig(s.URL))
			resp, err := c.Push(context.Background(), validPush())
			if err == nil {
				t.Fatalf("Push = %+v, want an error", resp)
			}
			e := asError(t, err)
			if e.Kind != tt.kind || daraja.KindOf(err) != tt.kind {
				t.Errorf("Kind %v (KindOf %v), want %v: %v", e.Kind, daraja.KindOf(err), tt.kind, err)
			}
			if e.HTTPStatus != tt.status {
				t.Errorf("HTTPStatus %d, want %d", e.HTTPStatus, tt.status)
			}
			if e.Code != tt.code {
				t.Errorf("Code %q, want %q", e.Code, tt.code)
			}
			if want := strings.TrimPrefix(tt.requestID, "-"); tt.requestID != "" && e.RequestID != want {
				t.Errorf("RequestID %q, want %q", e.RequestID, want)
			}
			if e.Uncertain != tt.uncertain {
				t.Errorf("Uncertain %v, want %v", e.Uncertain, tt.uncertain)
			}
			checkTidy(t, e)
			if !strings.Contains(e.Message, tt.message) {
				t.Errorf("Message %q lacks %q", e.Message, tt.message)
			}
			if e.RetryAfter < tt.retryAfter {
				t.Errorf("RetryAfter %v, want at least %v", e.RetryAfter, tt.retryAfter)
			}
			if e.Op != "push" {
				t.Errorf("Op %q", e.Op)
			}
			want := tt.apiCalls
			if want == 0 {
				want = 1
			}
			if got := s.apiCalls.Load(); got != want {
				t.Errorf("%d pushes sent, want %d", got, want)
			}
			if want == 2 && s.oauthCalls.Load() != 2 {
				t.Errorf("%d OAuth calls after an invalid token, want 2", s.oauthCalls.Load())
			}
			noSecrets(t, err.Error())
		})
	}
}

func TestPushAccepted(t *testing.T) {
	s := newStub(t, nil, replyJSON(http.StatusOK, fixture(t, "push-accepted.json")))
	c := newClient(t, testConfig(s.URL))
	got, err := c.Push(context.Background(), validPush())
	if err != nil {
		t.Fatal(err)
	}
	want := daraja.PushResponse{
		MerchantRequestID:   "2654-4b64-97ff-b827b542881d3130",
		CheckoutRequestID:   "ws_CO_1007202409152617172396192",
		ResponseCode:        "0",
		ResponseDescription: "Success. Request accepted for processing",
		CustomerMessage:     "Success. Request accepted for processing",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("PushResponse (-want +got):\n%s", diff)
	}
	// Ids are kept exactly, descriptions cleaned, a ResponseCode reading as
	// zero is "0".
	odd := `{"MerchantRequestID":" m-1 ~","CheckoutRequestID":"ws_CO_ 1","ResponseCode":"00","ResponseDescription":"Success\u0000","CustomerMessage":"\u001bSuccess"}`
	got, err = newClient(t, testConfig(newStub(t, nil, replyJSON(http.StatusOK, []byte(odd))).URL)).Push(context.Background(), validPush())
	want = daraja.PushResponse{MerchantRequestID: " m-1 ~", CheckoutRequestID: "ws_CO_ 1", ResponseCode: "0", ResponseDescription: "Success", CustomerMessage: "Success"}
	if diff := cmp.Diff(want, got); diff != "" || err != nil {
		t.Errorf("odd but sane answer, %v (-want +got):\n%s", err, diff)
	}
	// ResponseCode as a number is read too.
	s2 := newStub(t, nil, replyJSON(http.StatusOK, []byte(`{"MerchantRequestID":"m","CheckoutRequestID":"ws_CO_1","ResponseCode":0}`)))
	got, err = newClient(t, testConfig(s2.URL)).Push(context.Background(), validPush())
	if err != nil || got.ResponseCode != "0" || got.CheckoutRequestID != "ws_CO_1" {
		t.Errorf("numeric ResponseCode: %+v, %v", got, err)
	}
}

func TestQuery(t *testing.T) {
	final := daraja.QueryResult{
		ResponseCode:        "0",
		ResponseDescription: "The service request has been accepted successsfully",
		MerchantRequestID:   "2654-4b64-97ff-b827b542881d3130",
		CheckoutRequestID:   "ws_CO_1007202409152617172396192",
		ResultCode:          "1032",
		ResultDesc:          "Request cancelled by user",
	}
	processing := final
	processing.ResultCode, processing.ResultDesc = "4999", "The transaction is still under processing"
	tests := []struct {
		name     string
		answer   http.HandlerFunc
		want     daraja.QueryResult
		sentinel error
		kind     daraja.Kind
		ok       bool
	}{
		{name: "final", answer: replyJSON(200, fixture(t, "query-final.json")), want: final, ok: true},
		{name: "final with numeric ResultCode", answer: replyJSON(200, []byte(`{"ResponseCode":"0","ResultCode":0,"ResultDesc":"The service request is processed successfully.","CheckoutRequestID":"ws_CO_1"}`)),
			want: daraja.QueryResult{ResponseCode: "0", ResultCode: "0", ResultDesc: "The service request is processed successfully.", CheckoutRequestID: "ws_CO_1"}, ok: true},
		{name: "string code", answer: replyJSON(200, []byte(`{"ResponseCode":"0","ResultCode":"SFC_IC0003","ResultDesc":"Operator does not exist"}`)),
			want: daraja.QueryResult{ResponseCode: "0", ResultCode: "SFC_IC0003", ResultDesc: "Operator does not exist"}, ok: true},
		{name: "4999", answer: replyJSON(200, fixture(t, "query-processing-4999.json")), want: processing,
			sentinel: daraja.ErrStillProcessing, kind: daraja.KindTransient},
		{name: "500 being processed", answer: replyJSON(500, fixture(t, "query-processing-500.json")),
			sentinel: daraja.ErrStillProcessing, kind: daraja.KindTransient},
		{name: "does not exist", answer: replyJSON(500, []byte(`{"requestId":"r","errorCode":"500.001.1001","errorMessage":"The transaction does not Exist"}`)),
			sentinel: daraja.ErrUnknownTransaction, kind: daraja.KindRefused},
		{name: "spike arrest", answer: replyJSON(500, fixture(t, "spike-arrest.json")), kind: daraja.KindTransient},
		{name: "bad request", answer: replyJSON(400, fixture(t, "push-invalid-phone.json")), kind: daraja.KindRefused},
		{name: "html 502", answer: reply(502, "text/html", []byte("<html>bad gateway</html>")), kind: daraja.KindAmbiguous},
		{name: "no ResultCode", answer: replyJSON(200, []byte(`{"ResponseCode":"0"}`)), want: daraja.QueryResult{ResponseCode: "0"}, kind: daraja.KindAmbiguous},
		{name: "NUL in the texts, insane MerchantRequestID", answer: replyJSON(200, []byte(`{"ResponseCode":"0","ResponseDescription":"ok\u0000","MerchantRequestID":"m\u0000","CheckoutRequestID":"ws_CO_1","ResultCode":"1032","ResultDesc":"Request\u0000 cancelled\u0007 by user"}`)),
			want: daraja.QueryResult{ResponseCode: "0", ResponseDescription: "ok", CheckoutRequestID: "ws_CO_1", ResultCode: "1032", ResultDesc: "Request cancelled by user"}, ok: true},
		{name: "ResultCode with a NUL", answer: replyJSON(200, []byte(`{"ResponseCode":"0","ResultCode":"0\u0000"}`)), want: daraja.QueryResult{ResponseCode: "0"}, kind: daraja.KindAmbiguous},
		{name: "ResponseCode 00", answer: replyJSON(200, []byte(`{"ResponseCode":"00","ResultCode":"1"}`)), want: daraja.QueryResult{ResponseCode: "0", ResultCode: "1"}, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStub(t, nil, tt.answer)
			c := newClient(t, testConfig(s.URL))
			got, err := c.Query(context.Background(), "ws_CO_1007202409152617172396192")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("QueryResult (-want +got):\n%s", diff)
			}
			if tt.ok {
				if err != nil {
					t.Fatalf("Query: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Query: no error")
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Errorf("error %v does not match %v", err, tt.sentinel)
			}
			for _, other := range []error{daraja.ErrStillProcessing, daraja.ErrUnknownTransaction} {
				if other != tt.sentinel && errors.Is(err, other) {
					t.Errorf("error %v matches %v", err, other)
				}
			}
			if k := daraja.KindOf(err); k != tt.kind {
				t.Errorf("KindOf = %v, want %v", k, tt.kind)
			}
			if asError(t, err).Op != "query" {
				t.Errorf("Op %q", asError(t, err).Op)
			}
			noSecrets(t, err.Error())
		})
	}
}

func TestOAuth(t *testing.T) {
	tests := []struct {
		name   string
		answer http.HandlerFunc
		kind   daraja.Kind // of the push; -1 means success
		code   string
	}{
		{name: "expires_in string", answer: replyJSON(200, []byte(`{"access_token":"t1","expires_in":"3599"}`)), kind: -1},
		{name: "expires_in number", answer: replyJSON(200, []byte(`{"access_token":"t1","expires_in":3599}`)), kind: -1},
		{name: "expires_in absent", answer: replyJSON(200, []byte(`{"access_token":"t1"}`)), kind: -1},
		{name: "expires_in garbage", answer: replyJSON(200, []byte(`{"access_token":"t1","expires_in":"soon"}`)), kind: daraja.KindTransient, code: daraja.CodeBadResponse},
		{name: "no token", answer: replyJSON(200, []byte(`{"expires_in":"3599"}`)), kind: daraja.KindTransient, code: daraja.CodeBadResponse},
		{name: "bad credentials", answer: replyJSON(400, []byte(`{"requestId":"r","errorCode":"400.008.01","errorMessage":"Invalid Authentication passed"}`)),
			kind: daraja.KindRefused, code: "400.008.01"},
		{name: "bad credentials html", answer: reply(400, "text/html", []byte("<html>Bad Request</html>")), kind: daraja.KindRefused, code: "http.400"},
		{name: "empty 400 (rotated secret)", answer: reply(400, "", nil), kind: daraja.KindRefused, code: "http.400"},
		{name: "403 firewall html", answer: reply(403, "text/html", []byte("<html>Request Rejected</html>")), kind: daraja.KindRefused, code: "http.403"},
		{name: "401 html", answer: reply(401, "text/html", []byte("<html>Unauthorized</html>")), kind: daraja.KindRefused, code: "http.401"},
		{name: "503", answer: reply(503, "text/html", []byte("<html>down</html>")), kind: daraja.KindTransient, code: "http.503"},
		{name: "500", answer: reply(500, "text/html", []byte("<html>oops</html>")), kind: daraja.KindTransient, code: "http.500"},
		{name: "NUL in the envelope", answer: replyJSON(400, []byte(`{"requestId":"r\u0000","errorCode":"400.008.01","errorMessage":"Invalid\u0000 Authentication"}`)),
			kind: daraja.KindRefused, code: "400.008.01"},
		{name: "200 html", answer: reply(200, "text/html", []byte("<html>login</html>")), kind: daraja.KindTransient, code: daraja.CodeBadResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStub(t, tt.answer, replyJSON(200, fixture(t, "push-accepted.json")))
			c := newClient(t, testConfig(s.URL))
			_, err := c.Push(context.Background(), validPush())
			if tt.kind == -1 {
				if err != nil {
					t.Fatal(err)
				}
				if r := s.apiRequests(); len(r) != 1 || r[0].Header.Get("Authorization") != "Bearer t1" {
					t.Errorf("push requests %+v", r)
				}
				return
			}
			e := asError(t, err)
			if e.Kind != tt.kind {
				t.Errorf("Kind %v, want %v: %v", e.Kind, tt.kind, err)
			}
			if e.Code != tt.code {
				t.Errorf("Code %q, want %q", e.Code, tt.code)
			}
			if e.Uncertain {
				t.Errorf("Uncertain on a push that was never sent: %v", err)
			}
			checkTidy(t, e)
			if e.Op != "push" || !strings.Contains(e.Message, "access token") {
				t.Errorf("error %v does not say it failed on the token", err)
			}
			if n := s.apiCalls.Load(); n != 0 {
				t.Errorf("%d pushes sent without a token", n)
			}
			noSecrets(t, err.Error())
		})
	}
}

func TestTokenCachedAcrossCalls(t *testing.T) {
	s := newStub(t, nil, replyJSON(200, fixture(t, "push-accepted.json")))
	clk := &clock{now: fixedNow}
	cfg := testConfig(s.URL)
	cfg.Now = clk.Now
	c := newClient(t, cfg)
	push := func() {
		t.Helper()
		if _, err := c.Push(context.Background(), validPush()); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		push()
	}
	if n := s.oauthCalls.Load(); n != 1 {
		t.Fatalf("%d OAuth calls for 10 pushes, want 1", n)
	}
	// expires_in is 3599 s; the token is replaced a minute before that.
	clk.Advance(3599*time.Second - time.Minute - time.Second)
	push()
	if n := s.oauthCalls.Load(); n != 1 {
		t.Fatalf("%d OAuth calls before expiry, want 1", n)
	}
	clk.Advance(2 * time.Second)
	push()
	if n := s.oauthCalls.Load(); n != 2 {
		t.Fatalf("%d OAuth calls after expiry, want 2", n)
	}
}

func TestShortTokenLifetime(t *testing.T) {
	s := newStub(t, replyJSON(200, []byte(`{"access_token":"t","expires_in":120}`)), replyJSON(200, fixture(t, "push-accepted.json")))
	clk := &clock{now: fixedNow}
	cfg := testConfig(s.URL)
	cfg.Now = clk.Now
	c := newClient(t, cfg)
	for _, step := range []struct {
		advance time.Duration
		calls   int64
	}{{0, 1}, {89 * time.Second, 1}, {2 * time.Second, 2}} {
		clk.Advance(step.advance)
		if _, err := c.Push(context.Background(), validPush()); err != nil {
			t.Fatal(err)
		}
		if n := s.oauthCalls.Load(); n != step.calls {
			t.Fatalf("after %v: %d OAuth calls, want %d", step.advance, n, step.calls)
		}
	}
}

// TestConcurrentCallersShareOneRefresh: callers arriving while the token is
// being fetched wait for that fetch instead of starting their own.
func TestConcurrentCallersShareOneRefresh(t *testing.T) {
	release := make(chan struct{})
	s := newStub(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		replyJSON(200, fixture(t, "oauth-ok.json"))(w, r)
	}, replyJSON(200, fixture(t, "push-accepted.json")))
	c := newClient(t, testConfig(s.URL))
	const callers = 25
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Push(context.Background(), validPush())
			errs <- err
		}()
	}
	waitUntil(t, func() bool { return s.oauthCalls.Load() >= 1 })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := s.oauthCalls.Load(); n != 1 {
		t.Errorf("%d OAuth calls for %d concurrent callers, want 1", n, callers)
	}
	if n := s.apiCalls.Load(); n != callers {
		t.Errorf("%d pushes, want %d", n, callers)
	}
}

// TestInvalidTokenRefreshedOnce: a refused token is replaced once, by one
// fetch shared by every caller that saw it refused, and each push is sent
// again exactly once.
func TestInvalidTokenRefreshedOnce(t *testing.T) {
	var (
		mu     sync.Mutex
		issued int
	)
	oauth := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		issued++
		tok := map[int]string{1: "old", 2: "new"}[issued]
		mu.Unlock()
		if tok == "" {
			tok = "newer"
		}
		replyJSON(200, []byte(`{"access_token":"`+tok+`","expires_in":"3599"}`))(w, r)
	}
	api := func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer old" {
			replyJSON(404, fixture(t, "invalid-token.json"))(w, r)
			return
		}
		replyJSON(200, fixture(t, "push-accepted.json"))(w, r)
	}
	s2 := newStub(t, oauth, api)
	c := newClient(t, testConfig(s2.URL))
	const callers = 20
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Push(context.Background(), validPush()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := s2.oauthCalls.Load(); n != 2 {
		t.Errorf("%d OAuth calls, want 2 (the refused token and one refresh)", n)
	}
	var refused, accepted int
	for _, r := range s2.apiRequests() {
		switch r.Header.Get("Authorization") {
		case "Bearer old":
			refused++
		case "Bearer new":
			accepted++
		default:
			t.Errorf("push with %q", r.Header.Get("Authorization"))
		}
	}
	if accepted != callers || refused > callers {
		t.Errorf("%d pushes refused, %d accepted; want at most %d and exactly %d", refused, accepted, callers, callers)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
