// Package fuzz_test fuzzes callback-ingest's parser (ParseCallback). The
// target lives here, apart from package callback's own tests, because those
// link the embedded nats-server: fuzzing there would build and instrument a
// whole server for a one-second run. Nothing in this directory may import
// events/testkit.
package fuzz_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	callback "github.com/stkgate/stkgate/callback-ingest"
	"github.com/stkgate/stkgate/callback-ingest/internal/fixture"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/uniquekeys"
)

const (
	// maxJSONDepth is the parser's limit (callback's maxJSONDepth).
	maxJSONDepth = 32
	// transactionDateWire is Daraja's TransactionDate: YYYYMMDDHHmmss.
	transactionDateWire = "20060102150405"
)

// FuzzParseCallback: no input panics, every input gets the answer the
// reference parser (referenceParse, the parser by maps ParseCallback
// replaced) gives it, the same callback or the same reason, and what is
// accepted means one thing: written back in Daraja's shape, it reads the
// same.
func FuzzParseCallback(f *testing.F) {
	for _, body := range fixture.Callbacks(f, filepath.Join("..", "testdata", "callbacks")) {
		f.Add(body)
	}
	for _, s := range []string{
		fixture.Success(`{"Name":"Amount","Value":1.5}`, fixture.ItemReceipt),
		fixture.Success(fixture.ItemAmount, fixture.ItemReceipt, `{"Name":"TransactionDate","Value":"20240230120000"}`),
		fixture.Stk(fixture.IDs + `,"ResultCode":"SFC_IC0003","ResultDesc":"no"`),
		fixture.Stk(fixture.IDs + `,"ResultCode":"0"`),
		`{"Body":{"stkCallback":{"CheckoutRequestID":"\u0000"}}}`,
		strings.Repeat("[", 64),
		fixture.Stk(fixture.IDs + `,"ResultCode":1032,"ResultCode":0`),
		fixture.Stk(fixture.IDs + `,"ResultCode":1,"ResultDesc":"a\u0000b\u001f\n"`),
		fixture.Stk(fixture.IDs + `,"ResultCode":"stkgate.no_answer"`),
		fixture.Stk(fixture.IDs + `,"ResultCode":"Stkgate.x","ResultDesc":"\ud800"`),
		// What ParseCallback reads without maps, and where it must leave
		// the body to encoding/json (parsePlain).
		` {"Body" : {"stkCallback" : {` + fixture.IDs + ` , "ResultCode" : 1032 } } } ` + "\n",
		`{"B\u006fdy":{"stkCallback":{` + fixture.IDs + `,"ResultCode":1032}}}`,
		`{"Body":{"stk\u0043allback":{` + fixture.IDs + `,"ResultCode":1032}}}`,
		fixture.Stk(fixture.IDs + `,"Result\u0043ode":0,"ResultCode":1`),
		fixture.Stk(`"MerchantRequestID":"m\u002d1","CheckoutRequestID":"ws_CO_1","ResultCode":1`),
		fixture.Stk(fixture.IDs + `,"ResultCode":1,"ResultDesc":"caf\u00e9 café \"q\" \\"`),
		fixture.Stk(fixture.IDs + `,"ResultCode":"1","ResultDesc":null,"CallbackMetadata":null`),
		fixture.Stk(fixture.IDs + `,"ResultCode":1,"CallbackMetadata":{"Item":null}`),
		fixture.Stk(fixture.IDs + `,"ResultCode":1,"CallbackMetadata":{"Item":{}}`),
		fixture.Stk(fixture.IDs + `,"ResultCode":true,"CallbackMetadata":[]`),
		fixture.Stk(`"MerchantRequestID":{"a":"}"},"CheckoutRequestID":["]"],"ResultCode":1`),
		fixture.Success(`{"N\u0061me":"Amount","Value":1}`, fixture.ItemReceipt),
		fixture.Success(`{"Name":"Amo\u0075nt","Value":1}`, fixture.ItemReceipt),
		fixture.Success(fixture.ItemAmount, `{"Name":"MpesaReceiptNumber","Value":"SCL4XQ2B7\u004b"}`),
		fixture.Success(fixture.ItemAmount, fixture.ItemReceipt, `{"Name":"PhoneNumber","Value":"+254 712\t345"}`),
		fixture.Success(fixture.ItemAmount, fixture.ItemReceipt, `{"Name":"PhoneNumber","Value":-2.5e3}`, `{"Name":"Balance","Value":{"x":[1,"]"]}}`),
		fixture.Success(fixture.ItemAmount, fixture.ItemReceipt, `{"Name":"Balance"}`, `{"Name":"Amount"}`),
		fixture.Success(fixture.ItemAmount, fixture.ItemReceipt, `{"Name":null}`),
		fixture.Success(fixture.ItemAmount, fixture.ItemReceipt, `7`),
		fixture.Success(fixture.ItemAmount, fixture.ItemReceipt) + ` {}`,
		fixture.Success(fixture.ItemAmount, fixture.ItemReceipt) + `x`,
		`{"Body":{"stkCallback":{` + fixture.IDs + `,"ResultCode":1},"stkCallback\u0000":1}}`,
		`{"Body":{"stkCallback":{` + fixture.IDs + `,"ResultCode":1}},"Bodyé":1}`,
		`{"Body":null}`, `{"Body":[]}`, `{"Body":{"stkCallback":"x"}}`, `{}`, ` [] `,
	} {
		f.Add([]byte(s))
	}
	for _, s := range suspects {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		cb, err := callback.ParseCallback(body)
		sameAsReference(t, body, cb, err)
		if err != nil {
			var inv *callback.InvalidError
			if !errors.As(err, &inv) || inv.Reason == "" {
				t.Fatalf("error %v is not an *InvalidError with a reason", err)
			}
			// The reason goes into the answer, the logs and a NATS header:
			// short and on one line.
			if len(inv.Reason) > 200 || strings.ContainsFunc(inv.Reason, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Fatalf("reason %q", inv.Reason)
			}
			return
		}
		checkInvariants(t, cb)
		// What was taken has no key twice: its meaning is the same for
		// every parser.
		if err := uniquekeys.Check(body, maxJSONDepth); err != nil {
			t.Fatalf("accepted %q: %v", body, err)
		}
		again, err := callback.ParseCallback(render(t, cb))
		if err != nil {
			t.Fatalf("re-reading %+v: %v", cb, err)
		}
		if diff := cmp.Diff(cb, again); diff != "" {
			t.Fatalf("re-reading changed the meaning (-first +again):\n%s", diff)
		}
	})
}

// sameAsReference fails t unless referenceParse answers body with cb and
// err: the same callback, or an *InvalidError with the same reason.
func sameAsReference(t *testing.T, body []byte, cb callback.Callback, err error) {
	t.Helper()
	want, wantErr := referenceParse(body)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("%q: ParseCallback says %v, the reference %v", body, err, wantErr)
	}
	if err != nil {
		var got, ref *callback.InvalidError
		if !errors.As(err, &got) || !errors.As(wantErr, &ref) || got.Reason != ref.Reason {
			t.Fatalf("%q: ParseCallback refuses with %v, the reference with %v", body, err, wantErr)
		}
		return
	}
	if diff := cmp.Diff(want, cb); diff != "" {
		t.Fatalf("%q: ParseCallback's reading differs from the reference's (-reference +ParseCallback):\n%s", body, diff)
	}
}

func checkInvariants(t *testing.T, cb callback.Callback) {
	t.Helper()
	if cb.CheckoutRequestID == "" || cb.ResultCode == "" {
		t.Fatalf("accepted without CheckoutRequestID or ResultCode: %+v", cb)
	}
	if cb.Success() && cb.Receipt == "" {
		t.Fatalf("success without receipt: %+v", cb)
	}
	if cb.Amount < 0 {
		t.Fatalf("negative amount: %+v", cb)
	}
	if cb.TransactionDate != "" {
		if _, err := time.Parse(events.TransactionDateLayout, cb.TransactionDate); err != nil {
			t.Fatalf("TransactionDate %q: %v", cb.TransactionDate, err)
		}
	}
	for _, s := range []string{cb.MerchantRequestID, cb.CheckoutRequestID, cb.ResultCode, cb.ResultDesc, cb.Receipt, cb.Phone} {
		if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
			t.Fatalf("NUL or invalid UTF-8 accepted: %+v", cb)
		}
	}
	if events.DecidedByStkgate(strings.ToLower(cb.ResultCode)) {
		t.Fatalf("a callback claims stkgate's own code: %+v", cb)
	}
	if events.CleanText(cb.ResultDesc, events.MaxTextRunes) != cb.ResultDesc {
		t.Fatalf("ResultDesc not clean: %q", cb.ResultDesc)
	}
}

// render writes cb back in Daraja's shape: numbers as numbers where Daraja
// sends numbers.
func render(t *testing.T, cb callback.Callback) []byte {
	t.Helper()
	var items []map[string]any
	if cb.Amount != 0 {
		items = append(items, map[string]any{"Name": "Amount", "Value": cb.Amount})
	}
	if cb.Receipt != "" {
		items = append(items, map[string]any{"Name": "MpesaReceiptNumber", "Value": cb.Receipt})
	}
	items = append(items, map[string]any{"Name": "Balance"})
	if cb.TransactionDate != "" {
		d, err := time.Parse(events.TransactionDateLayout, cb.TransactionDate)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, map[string]any{"Name": "TransactionDate", "Value": json.Number(d.Format(transactionDateWire))})
	}
	if cb.Phone != "" {
		var v any = cb.Phone
		if strings.Trim(cb.Phone, "0123456789") == "" && cb.Phone[0] != '0' {
			v = json.Number(cb.Phone)
		}
		items = append(items, map[string]any{"Name": "PhoneNumber", "Value": v})
	}
	var code any = cb.ResultCode
	if _, err := strconv.ParseUint(cb.ResultCode, 10, 32); err == nil {
		code = json.Number(cb.ResultCode)
	}
	stk := map[string]any{
		"MerchantRequestID": cb.MerchantRequestID,
		"CheckoutRequestID": cb.CheckoutRequestID,
		"ResultCode":        code,
		"ResultDesc":        cb.ResultDesc,
		"CallbackMetadata":  map[string]any{"Item": items},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"Body": map[string]any{"stkCallback": stk}}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
