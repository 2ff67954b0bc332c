package darajatest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events/testkit/logtest"
)

func start(t *testing.T, o darajatest.Options) *darajatest.Server {
	t.Helper()
	s, err := darajatest.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// receiver records the callbacks it gets and answers with status.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []received
	status int
}

type received struct {
	Path   string
	Header http.Header
	Body   []byte
}

func newReceiver(t *testing.T, status int) *receiver {
	t.Helper()
	rc := &receiver{status: status}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{Path: r.URL.Path, Header: r.Header.Clone(), Body: b})
		rc.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rc.status)
		_, _ = w.Write([]byte(`{"ResultCode":0,"ResultDesc":"Accepted"}`))
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) received() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// token gets an access token over HTTP.
func token(t *testing.T, s *darajatest.Server) string {
	t.Helper()
	a := oauth(t, s)
	tok, _ := a.Body["access_token"].(string)
	if a.Status != 200 || tok == "" {
		t.Fatalf("oauth: %d %s", a.Status, a.Raw)
	}
	return tok
}

// oauth asks for a token with the default credentials.
func oauth(t *testing.T, s *darajatest.Server) answer {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(darajatest.DefaultConsumerKey + ":" + darajatest.DefaultConsumerSecret))
	return do(t, http.MethodGet, s.URL()+daraja.PathOAuth+"?grant_type=client_credentials", "Basic "+auth, "", nil)
}

// answer is an HTTP answer decoded generically (numbers as json.Number).
type answer struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

func do(t *testing.T, method, url, auth, contentType string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	_ = dec.Decode(&a.Body)
	return a
}

func pushBody(phone, callbackURL string) map[string]any {
	ts := daraja.Timestamp(time.Now())
	return map[string]any{
		"BusinessShortCode": "174379",
		"Password":          daraja.Password("174379", darajatest.DefaultPassKey, ts),
		"Timestamp":         ts,
		"TransactionType":   "CustomerPayBillOnline",
		"Amount":            1500,
		"PartyA":            phone,
		"PartyB":            "174379",
		"PhoneNumber":       phone,
		"CallBackURL":       callbackURL,
		"AccountReference":  "INV-2024-001",
		"TransactionDesc":   "Payment",
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func push(t *testing.T, s *darajatest.Server, tok string, body map[string]any) answer {
	t.Helper()
	return do(t, http.MethodPost, s.URL()+daraja.PathPush, "Bearer "+tok, "application/json", mustJSON(t, body))
}

func query(t *testing.T, s *darajatest.Server, tok, checkoutID string) answer {
	t.Helper()
	ts := daraja.Timestamp(time.Now())
	return do(t, http.MethodPost, s.URL()+daraja.PathQuery, "Bearer "+tok, "application/json", mustJSON(t, map[string]any{
		"BusinessShortCode": "174379",
		"Password":          daraja.Password("174379", darajatest.DefaultPassKey, ts),
		"Timestamp":         ts,
		"CheckoutRequestID": checkoutID,
	}))
}

func TestOAuth(t *testing.T) {
	s := start(t, darajatest.Options{})
	url := s.URL() + daraja.PathOAuth + "?grant_type=client_credentials"
	basic := func(k, sec string) string {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth(k, sec)
		return r.Header.Get("Authorization")
	}

	ok := do(t, http.MethodGet, url, basic(darajatest.DefaultConsumerKey, darajatest.DefaultConsumerSecret), "", nil)
	if ok.Status != 200 || ok.Body["access_token"] == "" {
		t.Fatalf("oauth: %d %s", ok.Status, ok.Raw)
	}
	if exp, isString := ok.Body["expires_in"].(string); !isString || exp != "3599" {
		t.Errorf("expires_in %#v, want the string \"3599\"", ok.Body["expires_in"])
	}

	for name, auth := range map[string]string{
		"wrong secret": basic(darajatest.DefaultConsumerKey, "nope"),
		"wrong key":    basic("nope", darajatest.DefaultConsumerSecret),
		"none":         "",
		"bearer":       "Bearer x",
	} {
		a := do(t, http.MethodGet, url, auth, "", nil)
		if a.Status != 400 || a.Body["errorCode"] != "400.008.01" {
			t.Errorf("%s: %d %s, want 400 400.008.01", name, a.Status, a.Raw)
		}
	}
	a := do(t, http.MethodGet, s.URL()+daraja.PathOAuth, basic(darajatest.DefaultConsumerKey, darajatest.DefaultConsumerSecret), "", nil)
	if a.Status != 400 {
		t.Errorf("without grant_type: %d %s", a.Status, a.Raw)
	}

	short := start(t, darajatest.Options{TokenTTL: 90 * time.Second, ConsumerKey: "k", ConsumerSecret: "s"})
	a = do(t, http.MethodGet, short.URL()+daraja.PathOAuth+"?grant_type=client_credentials", basic("k", "s"), "", nil)
	if a.Body["expires_in"] != "90" {
		t.Errorf("expires_in %#v for a 90 s TTL", a.Body["expires_in"])
	}
}

// TestPushRefusals: the fake refuses what Daraja refuses, with Daraja's
// envelope, records the push as not accepted and sends no callback.
func TestPushRefusals(t *testing.T) {
	s := start(t, darajatest.Options{CallbackDelay: -1})
	rc := newReceiver(t, 200)
	cb := rc.URL + "/hooks/stk-push/1"
	tok := token(t, s)
	old := time.Now().Add(-10 * time.Minute)
	oldTS := daraja.Timestamp(old)

	tests := []struct {
		name        string
		change      func(map[string]any)
		contentType string // default application/json; "-" for none
		auth        string // default the valid token
		status      int
		code        string
		message     string
	}{
		{name: "bad password", change: func(b map[string]any) { b["Password"] = daraja.Password("174379", "wrong", b["Timestamp"].(string)) },
			status: 500, code: "500.001.1001", message: "Wrong credentials"},
		{name: "timestamp in UTC", change: func(b map[string]any) {
			ts := time.Now().UTC().Format("20060102150405")
			b["Timestamp"], b["Password"] = ts, daraja.Password("174379", darajatest.DefaultPassKey, ts)
		}, status: 400, code: "400.002.02", message: "Bad Request - Invalid Timestamp"},
		{name: "timestamp ten minutes old", change: func(b map[string]any) {
			b["Timestamp"], b["Password"] = oldTS, daraja.Password("174379", darajatest.DefaultPassKey, oldTS)
		}, status: 400, code: "400.002.02", message: "Bad Request - Invalid Timestamp"},
		{name: "timestamp malformed", change: func(b map[string]any) { b["Timestamp"] = "2024-03-21 14:30" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid Timestamp"},
		{name: "phone 07", change: func(b map[string]any) { b["PhoneNumber"], b["PartyA"] = "0712345678", "0712345678" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid PhoneNumber"},
		{name: "PartyA 07", change: func(b map[string]any) { b["PartyA"] = "0712345678" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid PartyA"},
		{name: "phone 11 digits", change: func(b map[string]any) { b["PhoneNumber"] = "25471234567" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid PhoneNumber"},
		{name: "decimal amount", change: func(b map[string]any) { b["Amount"] = 1.5 },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid Amount"},
		{name: "decimal amount 1.0", change: func(b map[string]any) { b["Amount"] = json.Number("1.0") },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid Amount"},
		{name: "decimal amount string", change: func(b map[string]any) { b["Amount"] = "1.50" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid Amount"},
		{name: "amount 0", change: func(b map[string]any) { b["Amount"] = 0 },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid Amount"},
		{name: "amount over cap", change: func(b map[string]any) { b["Amount"] = 250001 },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid Amount"},
		{name: "amount negative", change: func(b map[string]any) { b["Amount"] = -1 },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid Amount"},
		{name: "reference 13", change: func(b map[string]any) { b["AccountReference"] = "INV-2024-0001" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid AccountReference"},
		{name: "reference missing", change: func(b map[string]any) { delete(b, "AccountReference") },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid AccountReference"},
		{name: "description 14", change: func(b map[string]any) { b["TransactionDesc"] = "Payment for it" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid TransactionDesc"},
		{name: "transaction type", change: func(b map[string]any) { b["TransactionType"] = "PayBill" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid TransactionType"},
		{name: "party b", change: func(b map[string]any) { b["PartyB"] = "till" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid PartyB"},
		{name: "shortcode malformed", change: func(b map[string]any) { b["BusinessShortCode"] = "1743" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid BusinessShortCode"},
		{name: "other shortcode", change: func(b map[string]any) {
			b["BusinessShortCode"], b["Password"] = "600000", daraja.Password("600000", darajatest.DefaultPassKey, b["Timestamp"].(string))
		}, status: 500, code: "500.001.1001", message: "Merchant does not exist"},
		{name: "callback uppercase host", change: func(b map[string]any) { b["CallBackURL"] = "https://Pay.Example.com/cb" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid CallBackURL"},
		{name: "callback naming mpesa", change: func(b map[string]any) { b["CallBackURL"] = "https://pay.example.com/mpesa/cb" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid CallBackURL"},
		{name: "callback relative", change: func(b map[string]any) { b["CallBackURL"] = "/cb" },
			status: 400, code: "400.002.02", message: "Bad Request - Invalid CallBackURL"},
		{name: "no content type", contentType: "-",
			status: 400, code: "400.002.02", message: "Bad Request - Invalid BusinessShortCode"},
		{name: "form content type", contentType: "application/x-www-form-urlencoded",
			status: 400, code: "400.002.02", message: "Bad Request - Invalid BusinessShortCode"},
		{name: "expired token", auth: "expired",
			status: 404, code: "404.001.03", message: "Invalid Access Token"},
		{name: "unknown token", auth: "Bearer c9SQxWWhmdVRlyh0zh8gZDTkubVF",
			status: 404, code: "404.001.03", message: "Invalid Access Token"},
		{name: "no token", auth: "-",
			status: 404, code: "404.001.03", message: "Invalid Access Token"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			phone := "2547000000" + string(rune('0'+i/10)) + string(rune('0'+i%10))
			body := pushBody(phone, cb)
			if tt.change != nil {
				tt.change(body)
			}
			ct := "application/json"
			switch tt.contentType {
			case "-":
				ct = ""
			case "":
			default:
				ct = tt.contentType
			}
			auth := "Bearer " + tok
			switch tt.auth {
			case "-":
				auth = ""
			case "expired":
				old := token(t, s)
				s.ExpireTokens()
				auth = "Bearer " + old
				t.Cleanup(func() { tok = token(t, s) })
			case "":
			default:
				auth = tt.auth
			}
			before := len(s.Pushes())
			a := do(t, http.MethodPost, s.URL()+daraja.PathPush, auth, ct, mustJSON(t, body))
			if a.Status != tt.status || a.Body["errorCode"] != tt.code || a.Body["errorMessage"] != tt.message {
				t.Errorf("got %d %s\nwant %d %s %q", a.Status, a.Raw, tt.status, tt.code, tt.message)
			}
			if _, ok := a.Body["requestId"].(string); !ok {
				t.Errorf("no requestId in %s", a.Raw)
			}
			if ct := a.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			pushes := s.Pushes()
			if len(pushes) != before+1 {
				t.Fatalf("%d pushes recorded, want %d", len(pushes), before+1)
			}
			if p := pushes[len(pushes)-1]; p.Accepted || p.HTTPStatus != tt.status || p.ErrorCode != tt.code {
				t.Errorf("recorded %+v", p)
			}
		})
	}
	if n := len(s.AcceptedPushes()); n != 0 {
		t.Errorf("%d pushes accepted", n)
	}
	if err := s.Drain(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if n := len(s.Callbacks()) + len(rc.received()); n != 0 {
		t.Errorf("%d callbacks for refused pushes", n)
	}
}

func TestPushAcceptsDarajaVariants(t *testing.T) {
	s := start(t, darajatest.Options{CallbackDelay: time.Hour})
	tok := token(t, s)
	tests := map[string]func(map[string]any){
		"as documented": func(map[string]any) {},
		"numbers for numbers": func(b map[string]any) {
			b["BusinessShortCode"], b["PartyA"], b["PartyB"], b["PhoneNumber"] = 174379, 254712000001, 174379, 254712000001
		},
		"amount as a string":   func(b map[string]any) { b["Amount"] = "10" },
		"no description":       func(b map[string]any) { delete(b, "TransactionDesc") },
		"charset content type": func(b map[string]any) {},
		"limits": func(b map[string]any) {
			b["Amount"], b["AccountReference"], b["TransactionDesc"] = 250000, "ABCDEFGHIJKL", "Thirteen char"
		},
		"buy goods till":        func(b map[string]any) { b["TransactionType"], b["PartyB"] = "CustomerBuyGoodsOnline", "5432101" },
		"airtel-range 2541 num": func(b map[string]any) { b["PhoneNumber"], b["PartyA"] = "254112345678", "254112345678" },
	}
	i := 0
	for name, change := range tests {
		i++
		phone := "25471200" + string(rune('0'+i)) + "999"
		body := pushBody(phone, "https://pay.example.com/hooks/stk-push/x")
		change(body)
		ct := "application/json"
		if name == "charset content type" {
			ct = "application/json; charset=utf-8"
		}
		a := do(t, http.MethodPost, s.URL()+daraja.PathPush, "Bearer "+tok, ct, mustJSON(t, body))
		if a.Status != 200 || a.Body["ResponseCode"] != "0" {
			t.Errorf("%s: %d %s", name, a.Status, a.Raw)
			continue
		}
		// The exact success shape, every value a string.
		for _, k := range []string{"MerchantRequestID", "CheckoutRequestID", "ResponseCode", "ResponseDescription", "CustomerMessage"} {
			if _, ok := a.Body[k].(string); !ok {
				t.Errorf("%s: %s is %#v", name, k, a.Body[k])
			}
		}
		if len(a.Body) != 5 || !strings.HasPrefix(a.Body["CheckoutRequestID"].(string), "ws_CO_") ||
			a.Body["ResponseDescription"] != "Success. Request accepted for processing" {
			t.Errorf("%s: answer %s", name, a.Raw)
		}
	}
	ids := map[string]bool{}
	for _, p := range s.AcceptedPushes() {
		if ids[p.CheckoutRequestID] || ids[p.MerchantRequestID] {
			t.Errorf("id reused: %+v", p)
		}
		ids[p.CheckoutRequestID], ids[p.MerchantRequestID] = true, true
	}
	if len(ids) != 2*len(tests) {
		t.Errorf("%d ids for %d pushes", len(ids), len(tests))
	}
}

// shape is a JSON value's structure: "number", "string", … for scalars,
// objects member by member, and CallbackMetadata's Item list keyed by Name
// (order and count vary in Daraja's callbacks).
func shape(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, val := range v {
			out[k] = shape(val)
		}
		return out
	case []any:
		items := map[string]any{}
		for _, it := range v {
			m, _ := it.(map[string]any)
			name, _ := m["Name"].(string)
			if val, ok := m["Value"]; ok {
				items[name] = shape(val)
			} else {
				items[name] = "no Value"
			}
		}
		return items
	case json.Number:
		return "number"
	case string:
		return "string"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return "?"
}

func decodeGeneric(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return m
}

func stkCallback(m map[string]any) map[string]any {
	body, _ := m["Body"].(map[string]any)
	cb, _ := body["stkCallback"].(map[string]any)
	return cb
}

// TestCallbacksHaveFixtureShapes: each default outcome arrives as Daraja
// sends it: the fixture's structure (numbers as numbers, Balance without a
// Value), its ResultCode and ResultDesc, Daraja's headers.
func TestCallbacksHaveFixtureShapes(t *testing.T) {
	s := start(t, darajatest.Options{CallbackDelay: -1})
	rc := newReceiver(t, 200)
	tok := token(t, s)
	tests := []struct {
		phone, fixture string
	}{
		{"254712345678", "success.json"},
		{"254712341032", "cancelled.json"},
		{"254712340001", "insufficient.json"},
		{"254712341037", "timeout.json"},
		{"254712341019", "expired.json"},
		{"254712342001", "wrong-pin.json"},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			path := "/hooks/stk-push/" + tt.phone
			delivered := len(s.Callbacks())
			a := push(t, s, tok, pushBody(tt.phone, rc.URL+path))
			if a.Status != 200 {
				t.Fatalf("push: %d %s", a.Status, a.Raw)
			}
			pushed := time.Now()
			got, err := s.WaitCallbacks(ctx(t), delivered+1)
			if err != nil {
				t.Fatal(err)
			}
			d := got[len(got)-1]
			if d.StatusCode != 200 || d.Error != "" || d.URL != rc.URL+path || d.CheckoutRequestID != a.Body["CheckoutRequestID"] {
				t.Errorf("delivery %+v", d)
			}
			var r received
			for _, x := range rc.received() {
				if x.Path == path {
					r = x
				}
			}
			if !bytes.Equal(r.Body, d.Body) {
				t.Fatalf("receiver got %s, recorded %s", r.Body, d.Body)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json;charset=UTF-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if sc := r.Header.Get("BusinessShortCode"); sc != "174379" {
				t.Errorf("BusinessShortCode header %q", sc)
			}

			want := decodeGeneric(t, readFixture(t, tt.fixture))
			gotJSON := decodeGeneric(t, r.Body)
			if diff := cmp.Diff(shape(want), shape(gotJSON)); diff != "" {
				t.Errorf("structure differs from %s (-fixture +fake):\n%s", tt.fixture, diff)
			}
			w, g := stkCallback(want), stkCallback(gotJSON)
			if g["ResultCode"] != w["ResultCode"] || g["ResultDesc"] != w["ResultDesc"] {
				t.Errorf("result %v %q, want %v %q", g["ResultCode"], g["ResultDesc"], w["ResultCode"], w["ResultDesc"])
			}
			if g["MerchantRequestID"] != a.Body["MerchantRequestID"] || g["CheckoutRequestID"] != a.Body["CheckoutRequestID"] {
				t.Errorf("ids %v %v differ from the push answer %s", g["MerchantRequestID"], g["CheckoutRequestID"], a.Raw)
			}
			if tt.fixture == "success.json" {
				checkSuccessItems(t, g, tt.phone, pushed)
			}
		})
	}
}

func checkSuccessItems(t *testing.T, cb map[string]any, phone string, pushed time.Time) {
	t.Helper()
	md, _ := cb["CallbackMetadata"].(map[string]any)
	items, _ := md["Item"].([]any)
	values := map[string]any{}
	for _, it := range items {
		m := it.(map[string]any)
		values[m["Name"].(string)] = m["Value"]
	}
	if amt, _ := values["Amount"].(json.Number).Float64(); amt != 1500 {
		t.Errorf("Amount %v, want 1500", values["Amount"])
	}
	if values["PhoneNumber"].(json.Number).String() != phone {
		t.Errorf("PhoneNumber %v, want %s", values["PhoneNumber"], phone)
	}
	if r, _ := values["MpesaReceiptNumber"].(string); len(r) != 10 || strings.ToUpper(r) != r {
		t.Errorf("MpesaReceiptNumber %q", r)
	}
	when, err := daraja.ParseTimestamp(values["TransactionDate"].(json.Number).String())
	if err != nil || when.Before(pushed.Add(-time.Minute)) || when.After(time.Now().Add(time.Minute)) {
		t.Errorf("TransactionDate %v (%v) is not Nairobi time now", values["TransactionDate"], err)
	}
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "callbacks", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFixtureShapesAgree guards the comparison above: the fixtures' own
// variants share one structure per outcome kind.
func TestFixtureShapesAgree(t *testing.T) {
	success := shape(decodeGeneric(t, readFixture(t, "success.json")))
	reordered := shape(decodeGeneric(t, readFixture(t, "success-reordered.json")))
	// success-reordered has no Balance item: otherwise the same.
	sm := success.(map[string]any)["Body"].(map[string]any)["stkCallback"].(map[string]any)["CallbackMetadata"].(map[string]any)["Item"].(map[string]any)
	delete(sm, "Balance")
	if diff := cmp.Diff(success, reordered); diff != "" {
		t.Errorf("fixtures disagree:\n%s", diff)
	}
}

func TestLockedWhilePromptOpen(t *testing.T) {
	s := start(t, darajatest.Options{CallbackDelay: time.Hour})
	rc := newReceiver(t, 200)
	tok := token(t, s)
	const phone = "254712345678"
	first := push(t, s, tok, pushBody(phone, rc.URL+"/a"))
	if first.Status != 200 {
		t.Fatalf("first push: %d %s", first.Status, first.Raw)
	}
	second := push(t, s, tok, pushBody(phone, rc.URL+"/b"))
	if second.Status != 500 || second.Body["errorCode"] != "500.001.1001" ||
		!strings.HasPrefix(second.Body["errorMessage"].(string), "Unable to lock subscriber") ||
		!strings.HasPrefix(second.Body["requestId"].(string), "ws_CO_") {
		t.Errorf("second push: %d %s", second.Status, second.Raw)
	}
	if other := push(t, s, tok, pushBody("254712345679", rc.URL+"/c")); other.Status != 200 {
		t.Errorf("another phone: %d %s", other.Status, other.Raw)
	}
	s.Flush()
	if err := s.Drain(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if third := push(t, s, tok, pushBody(phone, rc.URL+"/d")); third.Status != 200 {
		t.Errorf("after the outcome: %d %s", third.Status, third.Raw)
	}
	if n := len(s.AcceptedPushes(darajatest.WithPhone(phone))); n != 2 {
		t.Errorf("%d accepted pushes to the phone, want 2", n)
	}
	if n := len(s.AcceptedPushes(darajatest.WithCallbackURL(rc.URL + "/b"))); n != 0 {
		t.Errorf("the locked push counted as accepted")
	}
	if n := len(s.AcceptedPushes(darajatest.WithCallbackURLSuffix("/d"), darajatest.WithPhone(phone))); n != 1 {
		t.Errorf("%d accepted pushes with suffix /d", n)
	}
}

func TestQueryStates(t *testing.T) {
	s := start(t, darajatest.Options{CallbackDelay: time.Hour})
	rc := newReceiver(t, 200)
	tok := token(t, s)

	unknown := query(t, s, tok, "ws_CO_0000")
	if unknown.Status != 500 || unknown.Body["errorCode"] != "500.001.1001" || unknown.Body["errorMessage"] != "The transaction does not Exist" {
		t.Errorf("unknown id: %d %s", unknown.Status, unknown.Raw)
	}

	p := push(t, s, tok, pushBody("254712341032", rc.URL+"/q"))
	id := p.Body["CheckoutRequestID"].(string)
	seen500, seen4999 := false, false
	for range 4 {
		a := query(t, s, tok, id)
		switch {
		case a.Status == 500 && a.Body["errorCode"] == "500.001.1001" && a.Body["errorMessage"] == "The transaction is being processed" && a.Body["requestId"] == id:
			seen500 = true
		case a.Status == 200 && a.Body["ResultCode"] == "4999" && a.Body["ResponseCode"] == "0" && a.Body["CheckoutRequestID"] == id:
			seen4999 = true
		default:
			t.Errorf("open transaction: %d %s", a.Status, a.Raw)
		}
	}
	if !seen500 || !seen4999 {
		t.Errorf("open transaction answered 500: %v, 4999: %v; want both forms", seen500, seen4999)
	}

	s.Flush()
	if err := s.Drain(ctx(t)); err != nil {
		t.Fatal(err)
	}
	final := query(t, s, tok, id)
	want := map[string]any{
		"ResponseCode":        "0",
		"ResponseDescription": "The service request has been accepted successsfully",
		"MerchantRequestID":   p.Body["MerchantRequestID"],
		"CheckoutRequestID":   id,
		"ResultCode":          "1032", // a string in the query, a number in the callback
		"ResultDesc":          "Request cancelled by user",
	}
	if diff := cmp.Diff(want, final.Body); diff != "" || final.Status != 200 {
		t.Errorf("final query %d (-want +got):\n%s", final.Status, diff)
	}
	qs := s.Queries()
	if len(qs) != 6 || qs[5].ResultCode != "1032" || qs[0].ErrorCode != "500.001.1001" {
		t.Errorf("queries recorded: %+v", qs)
	}

	// The query checks credentials as the push does.
	ts := daraja.Timestamp(time.Now())
	bad := do(t, http.MethodPost, s.URL()+daraja.PathQuery, "Bearer "+tok, "application/json", mustJSON(t, map[string]any{
		"BusinessShortCode": "174379", "Password": "bm9wZQ==", "Timestamp": ts, "CheckoutRequestID": id}))
	if bad.Status != 500 || bad.Body["errorMessage"] != "Wrong credentials" {
		t.Errorf("query with a bad password: %d %s", bad.Status, bad.Raw)
	}
	if a := do(t, http.MethodPost, s.URL()+daraja.PathQuery, "Bearer nope", "application/json", []byte(`{}`)); a.Status != 404 || a.Body["errorCode"] != "404.001.03" {
		t.Errorf("query with a bad token: %d %s", a.Status, a.Raw)
	}
}

func TestScripts(t *testing.T) {
	s := start(t, darajatest.Options{CallbackDelay: time.Hour})
	rc := newReceiver(t, 200)
	tok := token(t, s)

	// A non-numeric result code, a custom description, its own delay.
	s.Script("254799000001", darajatest.Script{ResultCode: "SFC_IC0003", ResultDesc: "Operator does not exist", CallbackDelay: -1})
	a := push(t, s, tok, pushBody("254799000001", rc.URL+"/sfc"))
	if a.Status != 200 {
		t.Fatalf("push: %d %s", a.Status, a.Raw)
	}
	got, err := s.WaitCallbacks(ctx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	cb := stkCallback(decodeGeneric(t, got[0].Body))
	if cb["ResultCode"] != "SFC_IC0003" || cb["ResultDesc"] != "Operator does not exist" || cb["CallbackMetadata"] != nil {
		t.Errorf("scripted callback %s", got[0].Body)
	}

	// Failures for the first calls, then normal service.
	s.Script("254799000002", darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailSpikeArrest, darajatest.FailServiceUnavailable, darajatest.FailInvalidPhone}})
	wantFirst := []struct {
		status int
		code   string
	}{{500, "500.003.02"}, {503, ""}, {400, "400.002.02"}, {200, ""}}
	for i, w := range wantFirst {
		a := push(t, s, tok, pushBody("254799000002", rc.URL+"/ff"))
		if a.Status != w.status || (w.code != "" && a.Body["errorCode"] != w.code) {
			t.Errorf("call %d: %d %s, want %d %s", i+1, a.Status, a.Raw, w.status, w.code)
		}
		if w.status == 503 && !strings.Contains(a.Header.Get("Content-Type"), "text/html") {
			t.Errorf("503 is not the gateway's HTML page: %q", a.Header.Get("Content-Type"))
		}
	}
	var failures []darajatest.Failure
	for _, p := range s.Pushes() {
		if p.Body.PhoneNumber == "254799000002" {
			failures = append(failures, p.Failure)
		}
	}
	if diff := cmp.Diff([]darajatest.Failure{darajatest.FailSpikeArrest, darajatest.FailServiceUnavailable, darajatest.FailInvalidPhone, 0}, failures); diff != "" {
		t.Errorf("recorded failures (-want +got):\n%s", diff)
	}

	// NoCallback: the outcome becomes final (query, lock) without a callback.
	s.Script("254799000003", darajatest.Script{NoCallback: true, CallbackDelay: -1})
	a = push(t, s, tok, pushBody("254799000003", rc.URL+"/lost"))
	id := a.Body["CheckoutRequestID"].(string)
	if err := s.WaitFor(ctx(t), func() bool { return query(t, s, tok, id).Body["ResultCode"] == "0" }); err != nil {
		t.Fatal(err)
	}
	if b := push(t, s, tok, pushBody("254799000003", rc.URL+"/lost2")); b.Status != 200 {
		t.Errorf("phone still locked after a lost callback: %d %s", b.Status, b.Raw)
	}
	for _, d := range s.Callbacks() {
		if strings.HasSuffix(d.URL, "/lost") {
			t.Errorf("callback sent despite NoCallback: %+v", d)
		}
	}

	// A paybill push to another PartyB is accepted and then fails (2028).
	body := pushBody("254799000004", rc.URL+"/2028")
	body["PartyB"] = "600000"
	a = push(t, s, tok, body)
	if a.Status != 200 || s.AcceptedPushes(darajatest.WithPhone("254799000004"))[0].ResultCode != "2028" {
		t.Errorf("PartyB mismatch: %d %s", a.Status, a.Raw)
	}

	if f, err := darajatest.ParseFailure("timeout-after-accept"); err != nil || f != darajatest.FailTimeoutAfterAccept {
		t.Errorf("ParseFailure: %v %v", f, err)
	}
	if _, err := darajatest.ParseFailure("nope"); err == nil {
		t.Error("ParseFailure accepted nope")
	}
}

// TestCallbackSentOnce: Daraja does not retry a callback the receiver
// failed.
func TestCallbackSentOnce(t *testing.T) {
	s := start(t, darajatest.Options{CallbackDelay: -1})
	rc := newReceiver(t, 500)
	tok := token(t, s)
	push(t, s, tok, pushBody("254712345678", rc.URL+"/fail"))
	if err := s.Drain(ctx(t)); err != nil {
		t.Fatal(err)
	}
	cbs := s.Callbacks()
	if len(cbs) != 1 || cbs[0].StatusCode != 500 || len(rc.received()) != 1 {
		t.Errorf("deliveries %+v, received %d", cbs, len(rc.received()))
	}

	// A receiver that is down: one attempt, recorded with its error.
	dead := newReceiver(t, 200)
	deadURL := dead.URL + "/gone"
	dead.Close()
	push(t, s, tok, pushBody("254712345679", deadURL))
	if err := s.Drain(ctx(t)); err != nil {
		t.Fatal(err)
	}
	cbs = s.Callbacks()
	if len(cbs) != 2 || cbs[1].StatusCode != 0 || cbs[1].Error == "" {
		t.Errorf("delivery to a dead receiver %+v", cbs)
	}
}

// TestCloseStopsEverything: Close drops pending outcomes, ends a request it
// is holding and leaves no goroutine behind.
func TestCloseStopsEverything(t *testing.T) {
	http.DefaultClient.CloseIdleConnections()
	before := runtime.NumGoroutine()

	rc := newReceiver(t, 200)
	logs := &logtest.Buffer{}
	s, err := darajatest.NewServer(darajatest.Options{CallbackDelay: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	tok := token(t, s)
	push(t, s, tok, pushBody("254712345678", rc.URL+"/pending"))
	s.Script("254712345670", darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailTimeout}})
	held := make(chan answer, 1)
	go func() {
		// The answer never comes; the connection closes.
		req, _ := http.NewRequest(http.MethodPost, s.URL()+daraja.PathPush, bytes.NewReader(mustJSON(t, pushBody("254712345670", rc.URL+"/held"))))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			held <- answer{Status: resp.StatusCode}
			return
		}
		held <- answer{}
	}()
	if err := s.WaitFor(ctx(t), func() bool { return len(s.Pushes()) == 1 }); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(logs.String(), "push held without an answer") {
		select {
		case <-ctx(t).Done():
			t.Fatal("the held request never reached its handler")
		case <-time.After(5 * time.Millisecond):
		}
	}

	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if a := <-held; a.Status == 200 {
		t.Errorf("held request answered %d", a.Status)
	}
	if n := len(s.Callbacks()) + len(rc.received()); n != 0 {
		t.Errorf("%d callbacks after Close", n)
	}
	if err := s.Drain(ctx(t)); err != nil {
		t.Errorf("Drain after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	rc.Close()
	http.DefaultClient.CloseIdleConnections()

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUnknownPath(t *testing.T) {
	s := start(t, darajatest.Options{})
	a := do(t, http.MethodPost, s.URL()+"/mpesa/c2b/v1/registerurl", "", "application/json", []byte(`{}`))
	if a.Status != 404 || a.Body["errorCode"] == nil {
		t.Errorf("unknown path: %d %s", a.Status, a.Raw)
	}
}

// TestNonDarajaFailures: the scripted answers that are not Daraja's usual
// envelope, and a 503 after the push was processed.
func TestNonDarajaFailures(t *testing.T) {
	s := start(t, darajatest.Options{CallbackDelay: time.Hour})
	rc := newReceiver(t, 200)
	tok := token(t, s)
	for _, tc := range []struct {
		name        string
		status      int
		contentType string // "" for an empty body
		accepted    bool
	}{
		{"html-404", 404, "text/html", false},
		{"html-403", 403, "text/html", false},
		{"unauthorized-empty", 401, "", false},
		{"nul-message", 400, "application/json", false},
		{"service-unavailable-after-accept", 503, "text/html", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := darajatest.ParseFailure(tc.name)
			if err != nil || f.String() != tc.name {
				t.Fatalf("ParseFailure(%q) = %v, %v", tc.name, f, err)
			}
			phone := "2547990001" + strconv.Itoa(10+int(f))
			s.Script(phone, darajatest.Script{FailFirst: []darajatest.Failure{f}})
			a := push(t, s, tok, pushBody(phone, rc.URL+"/"+tc.name))
			if a.Status != tc.status || !strings.HasPrefix(a.Header.Get("Content-Type"), tc.contentType) ||
				(tc.contentType == "") != (len(a.Raw) == 0) {
				t.Errorf("answer %d %q %q, want %d %q", a.Status, a.Header.Get("Content-Type"), a.Raw, tc.status, tc.contentType)
			}
			if tc.contentType == "text/html" && !bytes.Contains(a.Raw, []byte("<html")) {
				t.Errorf("not an HTML page: %q", a.Raw)
			}
			if f == darajatest.FailNULMessage {
				msg, _ := a.Body["errorMessage"].(string)
				if a.Body["errorCode"] != daraja.CodeBadRequest || !strings.Contains(msg, "\x00") {
					t.Errorf("envelope %q: want 400.002.02 with a NUL in errorMessage", a.Raw)
				}
			}
			if n := len(s.AcceptedPushes(darajatest.WithPhone(phone))); n != map[bool]int{false: 0, true: 1}[tc.accepted] {
				t.Errorf("%d prompts, want accepted=%v", n, tc.accepted)
			}
			p := s.Pushes()[len(s.Pushes())-1]
			if p.Failure != f || p.HTTPStatus != tc.status || p.Accepted != tc.accepted {
				t.Errorf("recorded %v %d accepted=%v", p.Failure, p.HTTPStatus, p.Accepted)
			}
		})
	}
}

// TestLockAfterServiceUnavailable: a 503 that hid a processed push leaves
// the phone locked, as Daraja does; the callback of that prompt comes.
func TestLockAfterServiceUnavailable(t *testing.T) {
	s := start(t, darajatest.Options{CallbackDelay: time.Hour})
	rc := newReceiver(t, 200)
	tok := token(t, s)
	const phone = "254712340503"
	s.Script(phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailServiceUnavailableAfterAccept}})
	if a := push(t, s, tok, pushBody(phone, rc.URL+"/first")); a.Status != 503 {
		t.Fatalf("first push: %d %s", a.Status, a.Raw)
	}
	retry := push(t, s, tok, pushBody(phone, rc.URL+"/retry"))
	if retry.Status != 500 || retry.Body["errorCode"] != daraja.CodeGeneric ||
		retry.Body["errorMessage"] != "Unable to lock subscriber, a transaction is already in process for the current subscriber" {
		t.Errorf("retry while the prompt is open: %d %s", retry.Status, retry.Raw)
	}
	s.Flush()
	got, err := s.WaitCallbacks(ctx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	prompts := s.AcceptedPushes(darajatest.WithPhone(phone))
	if len(prompts) != 1 || got[0].CheckoutRequestID != prompts[0].CheckoutRequestID || got[0].ResultCode != "0" ||
		!strings.HasSuffix(got[0].URL, "/first") {
		t.Errorf("prompts %+v, callback %+v", prompts, got[0])
	}
	if err := s.Drain(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if a := push(t, s, tok, pushBody(phone, rc.URL+"/after")); a.Status != 200 {
		t.Errorf("after the outcome: %d %s", a.Status, a.Raw)
	}
}

func TestFailOAuth(t *testing.T) {
	s := start(t, darajatest.Options{})
	for _, tc := range []struct {
		kind        string
		status      int
		contentType string
	}{
		{darajatest.OAuthEmpty400, 400, ""},
		{darajatest.OAuthHTML403, 403, "text/html"},
		{darajatest.OAuthServiceUnavailable, 503, "text/html"},
	} {
		before := s.TokenRequests()
		s.FailOAuth(2, tc.kind)
		for i := range 2 {
			a := oauth(t, s)
			if a.Status != tc.status || !strings.HasPrefix(a.Header.Get("Content-Type"), tc.contentType) ||
				(tc.contentType == "") != (len(a.Raw) == 0) {
				t.Errorf("%s, request %d: %d %q %q", tc.kind, i+1, a.Status, a.Header.Get("Content-Type"), a.Raw)
			}
		}
		token(t, s) // the third one succeeds
		if n := s.TokenRequests() - before; n != 3 {
			t.Errorf("%s: TokenRequests grew by %d, want 3", tc.kind, n)
		}
	}
	if err := darajatest.CheckOAuthFault("nope"); err == nil {
		t.Error("CheckOAuthFault accepted nope")
	}
}
