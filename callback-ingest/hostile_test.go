package callback

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
)

// TestCallbackHostileBodies posts hostile bodies to the real handler for a
// payment that is requested and dispatched, so that only the body stands
// between each of them and an stk.completed. Each gets a 400 whose
// ResultDesc names the problem, never a 500 or a crash, publishes nothing,
// and is kept raw on stkcb.unmatched.unparseable with the same reason.
func TestCallbackHostileBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	success := strings.TrimSpace(string(readFixture(t, "success")))
	// swap replaces old, which must be in the success fixture, by new.
	swap := func(old, new string) string {
		if !strings.Contains(success, old) {
			t.Fatalf("fixture lacks %s", old)
		}
		return strings.Replace(success, old, new, 1)
	}
	const (
		resultCode = `"ResultCode":0`
		amount     = `{"Name":"Amount","Value":1500.00}`
		checkout   = `"CheckoutRequestID":"ws_CO_21032024143055123712345678"`
		desc       = `"ResultDesc":"The service request is processed successfully."`
	)
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)

	tests := []struct {
		name, body, reason string
	}{
		{"empty body", ``, "not JSON"},
		{"white space", " \n", "not JSON"},
		{"truncated", success[:len(success)/2], "not JSON"},
		{"single quotes", strings.ReplaceAll(success, `"`, `'`), "not JSON"},
		{"trailing garbage", success + `garbage`, "data after the JSON value"},
		{"two callbacks", success + success, "data after the JSON value"},
		{"byte order mark", "\xef\xbb\xbf" + success, "not JSON"},
		{"NUL bytes", "\x00\x00\x00", "not JSON"},
		{"NUL byte in a key", swap(`"Body"`, "\"Bo\x00dy\""), "not JSON"},
		{"stkgate's own ResultCode", swap(resultCode, `"ResultCode":"stkgate.no_answer"`), "ResultCode is one of stkgate's own"},
		{"escaped NUL in CheckoutRequestID", swap(checkout, `"CheckoutRequestID":"ws_CO_1\u0000"`), "CheckoutRequestID has control characters"},
		{"an array", `[` + success + `]`, "not a JSON object"},
		{"form encoded", `Body=stkCallback&ResultCode=0`, "not JSON"},
		{"XML", `<Body><stkCallback><ResultCode>0</ResultCode></stkCallback></Body>`, "not JSON"},

		// A key twice: encoding/json would keep the last; a failure
		// followed by a success must not read as paid.
		{"duplicate ResultCode", swap(resultCode, `"ResultCode":1032,"ResultCode":0`), "duplicate key Body.stkCallback.ResultCode"},
		{"duplicate ResultCode escaped", swap(resultCode, `"ResultCode":1032,"\u0052esultCode":0`), "duplicate key Body.stkCallback.ResultCode"},
		{"duplicate CheckoutRequestID", swap(checkout, checkout+`,"CheckoutRequestID":"ws_CO_OTHER"`), "duplicate key Body.stkCallback.CheckoutRequestID"},
		{"duplicate Amount value", swap(amount, `{"Name":"Amount","Value":1,"Value":1500.00}`), "duplicate key Body.stkCallback.CallbackMetadata.Item[0].Value"},
		{"duplicate stkCallback", swap(`{"stkCallback":`, `{"stkCallback":{},"stkCallback":`), "duplicate key Body.stkCallback"},
		{"duplicate key not a name", swap(resultCode, resultCode+`,"254712345678":1,"254712345678":2`), "duplicate key"},
		{"10k nested", deep, "nested more than 32 levels deep"},
		{"10k nested inside", swap(resultCode, resultCode+`,"x":`+deep), "nested more than 32 levels deep"},
		{"10k unclosed", strings.Repeat(`{"a":`, 10000), "nested more than 32 levels deep"},

		// Wrong types.
		{"Body a string", `{"Body":"` + strings.ReplaceAll(success, `"`, `\"`) + `"}`, "Body not an object"},
		{"ResultCode a bool", swap(resultCode, `"ResultCode":false`), "ResultCode not a number"},
		{"ResultCode an object", swap(resultCode, `"ResultCode":{"code":0}`), "ResultCode not a number"},
		{"CheckoutRequestID a number", swap(checkout, `"CheckoutRequestID":21032024143055`), "CheckoutRequestID not a string"},
		{"Item an object", strings.Replace(swap(`"Item":[`, `"Item":{"a":[`), `]}}}}`, `]}}}}}`, 1), "CallbackMetadata.Item not an array"},
		{"Amount a string of words", swap(amount, `{"Name":"Amount","Value":"fifteen hundred"}`), "amount not a plain decimal"},

		// Huge, negative and fractional numbers.
		{"Amount 1e400", swap(amount, `{"Name":"Amount","Value":1e400}`), "amount not a plain decimal"},
		{"Amount 2^63", swap(amount, `{"Name":"Amount","Value":9223372036854775808}`), "amount out of range"},
		{"Amount 400 digits", swap(amount, `{"Name":"Amount","Value":`+strings.Repeat("9", 400)+`}`), "amount out of range"},
		{"Amount negative", swap(amount, `{"Name":"Amount","Value":-1500}`), "amount not positive"},
		{"Amount fraction", swap(amount, `{"Name":"Amount","Value":1500.5}`), "amount not whole"},
		{"Amount negative fraction", swap(amount, `{"Name":"Amount","Value":-0.5}`), "amount not positive"},
		{"ResultCode 1e400", swap(resultCode, `"ResultCode":1e400`), "ResultCode not a whole number"},
		{"ResultCode 2^63", swap(resultCode, `"ResultCode":9223372036854775808`), "ResultCode out of range"},
		{"ResultCode negative zero", swap(resultCode, `"ResultCode":-0`), "ResultCode not a whole number"},
		{"TransactionDate 1e400", swap(`20240321143055`, `1e400`), "TransactionDate not YYYYMMDDHHmmss"},
		{"PhoneNumber 1e400", swap(`254712345678}`, `1e400}`), "PhoneNumber not a phone number"},

		// Unicode where Daraja sends ASCII.
		{"receipt with an override", swap(`"SCL4XQ2B7K"`, `"SCL4\u202eXQ2B7K"`), "MpesaReceiptNumber malformed"},
		{"receipt in full-width letters", swap(`"SCL4XQ2B7K"`, `"ＳＣＬ4XQ2B7K"`), "MpesaReceiptNumber malformed"},
	}

	id := uuid.NewString()
	e.request(payment(id))
	e.dispatch(payment(id), "6e86-45dd-91ac-fd5d4178ab523002867", "ws_CO_21032024143055123712345678")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq := e.lastKept()
			status, body := e.post(http.MethodPost, id, strings.NewReader(tt.body))
			want, _ := json.Marshal(rejected(tt.reason))
			if status != http.StatusBadRequest || body != string(want)+"\n" {
				t.Errorf("answer %d %s, want 400 %s", status, body, want)
			}
			if n, _ := e.completed(id); n != 0 {
				t.Fatalf("%d stk.completed published", n)
			}
			kept, _, _ := e.keptSince(seq)
			if len(kept) != 1 {
				t.Fatalf("kept %d copies, want 1", len(kept))
			}
			k := kept[0]
			if k.Subject != events.CallbackSubjectUnmatched(events.UnmatchedUnparseable) || k.Body != tt.body ||
				k.Headers[events.CallbackHeaderDetail] != tt.reason {
				t.Errorf("kept on %s with detail %q (body kept whole: %v); want %s, %q",
					k.Subject, k.Headers[events.CallbackHeaderDetail], k.Body == tt.body,
					events.CallbackSubjectUnmatched(events.UnmatchedUnparseable), tt.reason)
			}
		})
	}

	// After all that, the genuine callback still counts.
	if status, body := e.post(http.MethodPost, id, strings.NewReader(success)); status != http.StatusOK || body != bodyAccepted {
		t.Errorf("the genuine callback: %d %s", status, body)
	}
	if n, _ := e.completed(id); n != 1 {
		t.Errorf("%d stk.completed after the genuine callback, want 1", n)
	}
}

// TestCallbackContentTypes: callback-ingest reads the body, whatever the
// Content-Type says, as Daraja's JSON: a genuine callback counts under any
// label, and a body that is not Daraja's JSON gets its 400 under any label.
func TestCallbackContentTypes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	success := string(readFixture(t, "success"))
	tests := []struct {
		name, ctype, body string
		status            int
		answer            string
	}{
		{"XML labelled XML", "application/xml", `<Body><stkCallback><ResultCode>0</ResultCode></stkCallback></Body>`, 400, "Rejected: not JSON"},
		{"form labelled form", "application/x-www-form-urlencoded", "Body=stkCallback&ResultCode=0", 400, "Rejected: not JSON"},
		{"binary", "application/octet-stream", "\x89PNG\r\n\x1a\n\x00", 400, "Rejected: not JSON"},
		{"UTF-16", "application/json; charset=utf-16", "\xff\xfe{\x00}\x00", 400, "Rejected: not JSON"},
		{"multipart", "multipart/form-data; boundary=X", "--X\r\nContent-Disposition: form-data; name=\"Body\"\r\n\r\n" + success + "\r\n--X--\r\n", 400, "Rejected: not JSON"},
		{"garbage label", ";;=/x", success, 200, "Accepted"},
		{"no label", "", success, 200, "Accepted"},
		{"text/plain", "text/plain", success, 200, "Accepted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.body = freshReceipt(tt.body)
			id := uuid.NewString()
			e.request(payment(id))
			e.dispatch(payment(id), "6e86-45dd-91ac-fd5d4178ab523002867", "ws_CO_21032024143055123712345678")
			seq := e.lastKept()
			req, err := http.NewRequest(http.MethodPost, e.srv.URL+RoutePrefix+tokenPath(id), strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			status, body := e.do(req)
			var a Answer
			if err := json.Unmarshal([]byte(body), &a); err != nil || status != tt.status || a.ResultDesc != tt.answer {
				t.Errorf("answer %d %s, want %d %q", status, body, tt.status, tt.answer)
			}
			want := 0
			if tt.status == http.StatusOK {
				want = 1
			}
			if n, _ := e.completed(id); n != want {
				t.Errorf("%d stk.completed, want %d", n, want)
			}
			if kept, _, _ := e.keptSince(seq); len(kept) != 1 || kept[0].Body != tt.body {
				t.Errorf("kept %d copies (want 1, the body whole)", len(kept))
			}
		})
	}
}

// TestCallbackUnicodeDescription: Daraja's ResultDesc is free text, kept
// exactly as sent, whatever script or marks it holds.
func TestCallbackUnicodeDescription(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.request(payment(id))
	e.dispatch(payment(id), "m-1", "ws_CO_1")
	desc := "Ombi limeghairiwa 🙅 \u200fمُلغى\u200f e\u0301"
	b, err := json.Marshal(desc)
	if err != nil {
		t.Fatal(err)
	}
	status, body := e.post(http.MethodPost, id, strings.NewReader(stk(ids+`,"ResultCode":1032,"ResultDesc":`+string(b))))
	if status != http.StatusOK || body != bodyAccepted {
		t.Fatalf("answer %d %s", status, body)
	}
	n, msg := e.completed(id)
	if n != 1 {
		t.Fatalf("%d stk.completed", n)
	}
	_, ev, err := events.Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.(events.Completed).ResultDesc; got != desc {
		t.Errorf("ResultDesc %q, want %q", got, desc)
	}
}

// TestCallbackControlCharacterInDescription: a success whose ResultDesc
// holds a NUL (which Postgres cannot store) is applied with the NUL dropped,
// not refused: the callback is the only word of the payment there will be.
func TestCallbackControlCharacterInDescription(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.requestDispatched(payment(id))
	body := strings.Replace(string(readFixture(t, "success")),
		`"ResultDesc":"The service request is processed successfully."`,
		`"ResultDesc":"The service request\u0000 is processed\u0007 successfully."`, 1)
	status, answer := e.post(http.MethodPost, id, strings.NewReader(body))
	if status != http.StatusOK || answer != bodyAccepted {
		t.Fatalf("answer %d %s", status, answer)
	}
	n, msg := e.completed(id)
	if n != 1 {
		t.Fatalf("%d stk.completed", n)
	}
	_, ev, err := events.Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	c := ev.(events.Completed)
	if c.ResultDesc != "The service request is processed successfully." || c.Receipt == "" {
		t.Errorf("published %+v", c)
	}
}
