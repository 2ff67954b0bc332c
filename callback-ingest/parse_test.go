package callback

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/stkgate/stkgate/callback-ingest/internal/fixture"
	"github.com/stkgate/stkgate/events"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// fixtures returns the callbacks Daraja sends, by file name without .json.
func fixtures(t testing.TB) map[string][]byte {
	t.Helper()
	return fixture.Callbacks(t, filepath.Join("testdata", "callbacks"))
}

// TestParseFixtures pins the reading of every fixture in a golden file.
func TestParseFixtures(t *testing.T) {
	t.Parallel()
	for name, body := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			cb, err := ParseCallback(body)
			if err != nil {
				t.Fatalf("ParseCallback: %v", err)
			}
			got, err := json.MarshalIndent(cb, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", "golden", name+".json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("parsed %s differs from %s (-want +got):\n%s", name, golden, diff)
			}
		})
	}
}

// TestParseFixturesMeaning states what the golden files must say, so that
// an -update cannot quietly bless a wrong reading.
func TestParseFixturesMeaning(t *testing.T) {
	t.Parallel()
	want := map[string]Callback{
		"success": {
			MerchantRequestID: "6e86-45dd-91ac-fd5d4178ab523002867",
			CheckoutRequestID: "ws_CO_21032024143055123712345678",
			ResultCode:        "0",
			ResultDesc:        "The service request is processed successfully.",
			Amount:            1500,
			Receipt:           "SCL4XQ2B7K",
			TransactionDate:   "2024-03-21 14:30:55",
			Phone:             "254712345678",
		},
		"success-no-balance": {
			MerchantRequestID: "29115-34620561-1",
			CheckoutRequestID: "ws_CO_191220191020363925",
			ResultCode:        "0",
			ResultDesc:        "The service request is processed successfully.",
			Amount:            1,
			Receipt:           "NLJ7RT61SV",
			TransactionDate:   "2019-12-19 10:21:15",
			Phone:             "254708374149",
		},
		"success-reordered": {
			MerchantRequestID: "a1f0-4c2e-8d7b-3e9f0c1d2b4a5678901",
			CheckoutRequestID: "ws_CO_05062025091502871722000000",
			ResultCode:        "0",
			ResultDesc:        "The service request is processed successfully.",
			Amount:            10,
			Receipt:           "TF5AB12CDE",
			TransactionDate:   "2025-06-05 09:15:30",
			Phone:             "254722000000",
		},
		"cancelled": {
			MerchantRequestID: "f1e2-4a6b-9c8d-7e5f4a3b2c1d0987654",
			CheckoutRequestID: "ws_CO_21032024150102334712345678",
			ResultCode:        "1032",
			ResultDesc:        "Request cancelled by user",
		},
		"expired": {
			MerchantRequestID: "d5e6-4f7a-9b8c-1d2e3f4a5b6c7d8e9f0",
			CheckoutRequestID: "ws_CO_21032024153344990712345678",
			ResultCode:        "1019",
			ResultDesc:        "Transaction has expired",
		},
		"insufficient": {
			MerchantRequestID: "b7c8-4d9e-8f0a-1b2c3d4e5f6a7b8c9d0",
			CheckoutRequestID: "ws_CO_21032024151210556712345678",
			ResultCode:        "1",
			ResultDesc:        "The balance is insufficient for the transaction.",
		},
		"prefixed-desc": {
			MerchantRequestID: "9f8e-4d7c-8b6a-5f4e3d2c1b0a9f8e7d6",
			CheckoutRequestID: "ws_CO_21032024155566334712345678",
			ResultCode:        "1036",
			ResultDesc:        "[STK_CB - ]SMSC ACK timeout.",
		},
		"timeout": {
			MerchantRequestID: "c3d4-4e5f-8a9b-0c1d2e3f4a5b6c7d8e9",
			CheckoutRequestID: "ws_CO_21032024152233778712345678",
			ResultCode:        "1037",
			ResultDesc:        "DS timeout user cannot be reached",
		},
		"wrong-pin": {
			MerchantRequestID: "e7f8-4a9b-8c0d-2e3f4a5b6c7d8e9f0a1",
			CheckoutRequestID: "ws_CO_21032024154455112712345678",
			ResultCode:        "2001",
			ResultDesc:        "The initiator information is invalid.",
		},
	}
	fx := fixtures(t)
	if len(fx) != len(want) {
		t.Errorf("%d fixtures, %d expectations: every fixture needs one", len(fx), len(want))
	}
	for name, body := range fx {
		got, err := ParseCallback(body)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if diff := cmp.Diff(want[name], got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
}

// The callback builders live in internal/fixture, which the fuzz targets
// (callback-ingest/fuzz) share.
var (
	stk     = fixture.Stk
	success = fixture.Success
)

const (
	ids         = fixture.IDs
	itemAmount  = fixture.ItemAmount
	itemReceipt = fixture.ItemReceipt
	itemDate    = `{"Name":"TransactionDate","Value":20240321143055}`
	itemPhone   = `{"Name":"PhoneNumber","Value":254712345678}`
)

// TestParseLenient: what Daraja has been seen (or may be expected) to send
// in other shapes still reads the same.
func TestParseLenient(t *testing.T) {
	t.Parallel()
	full := Callback{
		MerchantRequestID: "m-1", CheckoutRequestID: "ws_CO_1", ResultCode: "0", ResultDesc: "ok",
		Amount: 1500, Receipt: "SCL4XQ2B7K", TransactionDate: "2024-03-21 14:30:55", Phone: "254712345678",
	}
	with := func(f func(*Callback)) Callback { c := full; f(&c); return c }
	failed := func(code string) Callback {
		return Callback{MerchantRequestID: "m-1", CheckoutRequestID: "ws_CO_1", ResultCode: code, ResultDesc: "no"}
	}
	tests := []struct {
		name string
		body string
		want Callback
	}{
		{"numbers", success(itemAmount, itemReceipt, itemDate, itemPhone), full},
		{"ResultCode as a string", stk(ids + `,"ResultCode":"1032","ResultDesc":"no"`), failed("1032")},
		{"ResultCode 0 as a string", strings.Replace(success(itemAmount, itemReceipt), `"ResultCode":0`, `"ResultCode":"0"`, 1),
			with(func(c *Callback) { c.TransactionDate, c.Phone = "", "" })},
		{"ResultCode a named code", stk(ids + `,"ResultCode":"SFC_IC0003","ResultDesc":"no"`), failed("SFC_IC0003")},
		{"Amount 1", success(`{"Name":"Amount","Value":1}`, itemReceipt, itemDate, itemPhone), with(func(c *Callback) { c.Amount = 1 })},
		{"Amount 1.0", success(`{"Name":"Amount","Value":1.0}`, itemReceipt, itemDate, itemPhone), with(func(c *Callback) { c.Amount = 1 })},
		{"Amount 250000.000", success(`{"Name":"Amount","Value":250000.000}`, itemReceipt, itemDate, itemPhone), with(func(c *Callback) { c.Amount = 250000 })},
		{"Amount as a string", success(`{"Name":"Amount","Value":"1500"}`, itemReceipt, itemDate, itemPhone), full},
		{"TransactionDate as a string", success(itemAmount, itemReceipt, `{"Name":"TransactionDate","Value":"20240321143055"}`, itemPhone), full},
		{"PhoneNumber as a string", success(itemAmount, itemReceipt, itemDate, `{"Name":"PhoneNumber","Value":"254712345678"}`), full},
		{"PhoneNumber masked", success(itemAmount, itemReceipt, itemDate, `{"Name":"PhoneNumber","Value":"2547****5678"}`),
			with(func(c *Callback) { c.Phone = "2547****5678" })},
		{"leap day", success(itemAmount, itemReceipt, `{"Name":"TransactionDate","Value":20240229235959}`, itemPhone),
			with(func(c *Callback) { c.TransactionDate = "2024-02-29 23:59:59" })},
		{"reordered, Balance with and without Value, unknown items",
			success(`{"Name":"Balance"}`, itemPhone, `{"Name":"Balance","Value":"x"}`, itemDate, `{"Name":"Extra","Value":{"a":[1]}}`, itemReceipt, itemAmount),
			full},
		{"items with null Value", success(itemReceipt, `{"Name":"Amount","Value":null}`, `{"Name":"PhoneNumber","Value":null}`),
			with(func(c *Callback) { c.Amount, c.TransactionDate, c.Phone = 0, "", "" })},
		{"unknown fields", `{"Extra":1,"Body":{"x":true,"stkCallback":{"New":[1,2],` + ids + `,"ResultCode":1037,"ResultDesc":"no"}}}`, failed("1037")},
		{"no MerchantRequestID", stk(`"CheckoutRequestID":"ws_CO_1","ResultCode":1,"ResultDesc":"no"`),
			Callback{CheckoutRequestID: "ws_CO_1", ResultCode: "1", ResultDesc: "no"}},
		{"no ResultDesc", stk(ids + `,"ResultCode":1`), Callback{MerchantRequestID: "m-1", CheckoutRequestID: "ws_CO_1", ResultCode: "1"}},
		{"CallbackMetadata null", stk(ids + `,"ResultCode":1,"ResultDesc":"no","CallbackMetadata":null`), failed("1")},
		{"CallbackMetadata without Item", stk(ids + `,"ResultCode":1,"ResultDesc":"no","CallbackMetadata":{}`), failed("1")},
		{"ResultDesc cleaned", stk(ids + `,"ResultCode":1036,"ResultDesc":" [STK_CB - ]SMSC\tACK timeout. ü "`),
			Callback{MerchantRequestID: "m-1", CheckoutRequestID: "ws_CO_1", ResultCode: "1036", ResultDesc: "[STK_CB - ]SMSC ACK timeout. ü"}},
		// A stray control character costs nothing but itself: the callback
		// is the only word Safaricom sends.
		{"ResultDesc with NUL", stk(ids + `,"ResultCode":1,"ResultDesc":"a\u0000b"`),
			Callback{MerchantRequestID: "m-1", CheckoutRequestID: "ws_CO_1", ResultCode: "1", ResultDesc: "ab"}},
		{"success with a control character in ResultDesc", strings.Replace(success(itemAmount, itemReceipt, itemDate, itemPhone),
			`"ResultDesc":"ok"`, `"ResultDesc":"o\u0007k\u0000"`, 1), full},
		{"ResultDesc too long", stk(ids + `,"ResultCode":1,"ResultDesc":"` + strings.Repeat("é", 300) + `"`),
			Callback{MerchantRequestID: "m-1", CheckoutRequestID: "ws_CO_1", ResultCode: "1", ResultDesc: strings.Repeat("é", events.MaxTextRunes)}},
		{"PhoneNumber with a control character", success(itemAmount, itemReceipt, itemDate, `{"Name":"PhoneNumber","Value":"2547\u00001"}`),
			with(func(c *Callback) { c.Phone = "25471" })},
		{"whitespace around", " \n" + stk(ids+`,"ResultCode":1,"ResultDesc":"no"`) + "\r\n", failed("1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCallback([]byte(tt.body))
			if err != nil {
				t.Fatalf("ParseCallback: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseMalformed: every refusal names its reason, and the reason is what
// the answer will say.
func TestParseMalformed(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)
	deepArray := stk(ids + `,"ResultCode":1,"ResultDesc":"no","CallbackMetadata":{"Item":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`)
	tests := []struct {
		name, body, reason string
	}{
		{"empty", ``, "not JSON"},
		{"not JSON", `ResultCode=0`, "not JSON"},
		{"truncated", stk(ids + `,"ResultCode":0`)[:40], "not JSON"},
		{"raw NUL byte", "{\"Body\":\x00}", "not JSON"},
		{"two values", stk(ids+`,"ResultCode":1`) + `{}`, "data after the JSON value"},
		{"trailing garbage", stk(ids+`,"ResultCode":1`) + `x`, "data after the JSON value"},
		{"array", `[` + stk(ids+`,"ResultCode":1`) + `]`, "not a JSON object"},
		{"null", `null`, "not a JSON object"},
		{"string", `"Body"`, "not a JSON object"},
		{"deeply nested", deep, "nested more than 32 levels deep"},
		{"deeply nested items", deepArray, "nested more than 32 levels deep"},
		{"10k deep", strings.Repeat("[", 10000) + strings.Repeat("]", 10000), "nested more than 32 levels deep"},
		{"byte order mark", "\xef\xbb\xbf" + stk(ids+`,"ResultCode":1`), "not JSON"},
		// A key twice, anywhere: encoding/json would keep the last, and a
		// forged callback could hide a success behind a failure.
		{"duplicate ResultCode", stk(ids + `,"ResultCode":1032,"ResultDesc":"x","ResultCode":0`), "duplicate key Body.stkCallback.ResultCode"},
		{"duplicate ResultCode escaped", stk(ids + `,"ResultCode":1032,"\u0052esultCode":0`), "duplicate key Body.stkCallback.ResultCode"},
		{"duplicate CheckoutRequestID", stk(ids + `,"CheckoutRequestID":"ws_CO_2","ResultCode":1`), "duplicate key Body.stkCallback.CheckoutRequestID"},
		{"duplicate Body", `{"Body":{},"Body":` + stk(ids + `,"ResultCode":1`)[len(`{"Body":`):], "duplicate key Body"},
		{"duplicate item Value", success(itemReceipt, `{"Name":"Amount","Value":1,"Value":1500}`),
			"duplicate key Body.stkCallback.CallbackMetadata.Item[1].Value"},
		{"duplicate item Name", success(itemReceipt, `{"Name":"Balance","Value":1,"Name":"Amount"}`),
			"duplicate key Body.stkCallback.CallbackMetadata.Item[1].Name"},
		{"duplicate unknown key", stk(ids + `,"ResultCode":1,"Extra":1,"Extra":2`), "duplicate key Body.stkCallback.Extra"},
		{"duplicate key that is not a name", stk(ids + `,"ResultCode":1,"254712345678":1,"254712345678":2`), "duplicate key"},
		{"duplicate after garbage", stk(ids+`,"ResultCode":1,"ResultCode":0`) + `x`, "duplicate key Body.stkCallback.ResultCode"},
		{"no Body", `{"stkCallback":{}}`, "missing Body"},
		{"Body null", `{"Body":null}`, "missing Body"},
		{"Body lowercase only", `{"body":{"stkCallback":{` + ids + `,"ResultCode":1}}}`, "missing Body"},
		{"Body a string", `{"Body":"x"}`, "Body not an object"},
		{"no stkCallback", `{"Body":{}}`, "missing stkCallback"},
		{"stkCallback an array", `{"Body":{"stkCallback":[]}}`, "stkCallback not an object"},
		{"no CheckoutRequestID", stk(`"MerchantRequestID":"m","ResultCode":1`), "missing CheckoutRequestID"},
		{"empty CheckoutRequestID", stk(`"CheckoutRequestID":"","ResultCode":1`), "missing CheckoutRequestID"},
		{"CheckoutRequestID a number", stk(`"CheckoutRequestID":12,"ResultCode":1`), "CheckoutRequestID not a string"},
		{"CheckoutRequestID with NUL", stk(`"CheckoutRequestID":"ws\u0000","ResultCode":1`), "CheckoutRequestID has control characters"},
		{"CheckoutRequestID with newline", stk(`"CheckoutRequestID":"ws\n","ResultCode":1`), "CheckoutRequestID has control characters"},
		{"CheckoutRequestID too long", stk(`"CheckoutRequestID":"` + strings.Repeat("w", 129) + `","ResultCode":1`), "CheckoutRequestID too long"},
		{"MerchantRequestID an object", stk(`"MerchantRequestID":{},"CheckoutRequestID":"ws","ResultCode":1`), "MerchantRequestID not a string"},
		{"no ResultCode", stk(ids), "missing ResultCode"},
		{"ResultCode null", stk(ids + `,"ResultCode":null`), "missing ResultCode"},
		{"ResultCode bool", stk(ids + `,"ResultCode":false`), "ResultCode not a number"},
		{"ResultCode fraction", stk(ids + `,"ResultCode":0.5`), "ResultCode not a whole number"},
		{"ResultCode 0.0", stk(ids + `,"ResultCode":0.0`), "ResultCode not a whole number"},
		{"ResultCode exponent", stk(ids + `,"ResultCode":1e3`), "ResultCode not a whole number"},
		{"ResultCode negative", stk(ids + `,"ResultCode":-1`), "ResultCode not a whole number"},
		{"ResultCode huge", stk(ids + `,"ResultCode":123456789012345678901234567890`), "ResultCode out of range"},
		{"ResultCode empty string", stk(ids + `,"ResultCode":""`), "ResultCode not a whole number"},
		{"ResultCode padded string", stk(ids + `,"ResultCode":" 0"`), "ResultCode not a whole number"},
		{"ResultCode leading zero", stk(ids + `,"ResultCode":"00"`), "ResultCode not a whole number"},
		{"ResultCode named with a space", stk(ids + `,"ResultCode":"SFC IC"`), "ResultCode malformed"},
		{"ResultDesc a number", stk(ids + `,"ResultCode":1,"ResultDesc":1`), "ResultDesc not a string"},
		{"ResultCode stkgate's own", stk(ids + `,"ResultCode":"stkgate.no_answer"`), "ResultCode is one of stkgate's own"},
		{"ResultCode stkgate's own, upper case", stk(ids + `,"ResultCode":"STKGATE.refused"`), "ResultCode is one of stkgate's own"},
		{"ResultCode stkgate's own prefix only", stk(ids + `,"ResultCode":"stkgate."`), "ResultCode is one of stkgate's own"},
		{"CallbackMetadata an array", stk(ids + `,"ResultCode":0,"CallbackMetadata":[]`), "CallbackMetadata not an object"},
		{"Item an object", stk(ids + `,"ResultCode":0,"CallbackMetadata":{"Item":{}}`), "CallbackMetadata.Item not an array"},
		{"Item of strings", success(`"Amount"`), "CallbackMetadata.Item has a non-object"},
		{"Item without Name", success(`{"Value":1}`, itemReceipt), "CallbackMetadata.Item without a Name"},
		{"Item Name a number", success(`{"Name":1,"Value":1}`, itemReceipt), "CallbackMetadata.Item without a Name"},
		{"success without metadata", stk(ids + `,"ResultCode":0,"ResultDesc":"ok"`), "success without MpesaReceiptNumber"},
		{"success without receipt", success(itemAmount, itemDate, itemPhone), "success without MpesaReceiptNumber"},
		{"success with null receipt", success(itemAmount, `{"Name":"MpesaReceiptNumber","Value":null}`), "success without MpesaReceiptNumber"},
		{"success as string without receipt", stk(ids + `,"ResultCode":"0"`), "success without MpesaReceiptNumber"},
		{"receipt a number", success(`{"Name":"MpesaReceiptNumber","Value":123}`), "MpesaReceiptNumber not a string"},
		{"receipt empty", success(`{"Name":"MpesaReceiptNumber","Value":""}`), "MpesaReceiptNumber malformed"},
		{"receipt with a space", success(`{"Name":"MpesaReceiptNumber","Value":"SCL 4XQ"}`), "MpesaReceiptNumber malformed"},
		{"duplicate receipt", success(itemReceipt, `{"Name":"MpesaReceiptNumber","Value":"OTHER12345"}`), "duplicate MpesaReceiptNumber"},
		{"duplicate Amount", success(itemReceipt, itemAmount, `{"Name":"Amount","Value":1}`), "duplicate Amount"},
		{"Amount fraction", success(itemReceipt, `{"Name":"Amount","Value":1.5}`), "amount not whole"},
		{"Amount 1500.01", success(itemReceipt, `{"Name":"Amount","Value":1500.01}`), "amount not whole"},
		{"Amount fraction string", success(itemReceipt, `{"Name":"Amount","Value":"1.5"}`), "amount not whole"},
		{"Amount zero", success(itemReceipt, `{"Name":"Amount","Value":0}`), "amount not positive"},
		{"Amount 0.00", success(itemReceipt, `{"Name":"Amount","Value":0.00}`), "amount not positive"},
		{"Amount negative", success(itemReceipt, `{"Name":"Amount","Value":-1500}`), "amount not positive"},
		{"Amount exponent", success(itemReceipt, `{"Name":"Amount","Value":1.5e3}`), "amount not a plain decimal"},
		{"Amount huge exponent", success(itemReceipt, `{"Name":"Amount","Value":1e999999999}`), "amount not a plain decimal"},
		{"Amount huge", success(itemReceipt, `{"Name":"Amount","Value":99999999999999999999999999}`), "amount out of range"},
		{"Amount string with spaces", success(itemReceipt, `{"Name":"Amount","Value":" 1500"}`), "amount not a plain decimal"},
		{"Amount string leading zero", success(itemReceipt, `{"Name":"Amount","Value":"01500"}`), "amount not a plain decimal"},
		{"Amount string trailing dot", success(itemReceipt, `{"Name":"Amount","Value":"1500."}`), "amount not a plain decimal"},
		{"Amount bool", success(itemReceipt, `{"Name":"Amount","Value":true}`), "Amount not a number"},
		{"TransactionDate short", success(itemReceipt, `{"Name":"TransactionDate","Value":202403211430}`), "TransactionDate not YYYYMMDDHHmmss"},
		{"TransactionDate exponent", success(itemReceipt, `{"Name":"TransactionDate","Value":2.0240321143055e13}`), "TransactionDate not YYYYMMDDHHmmss"},
		{"TransactionDate fraction", success(itemReceipt, `{"Name":"TransactionDate","Value":20240321143055.0}`), "TransactionDate not YYYYMMDDHHmmss"},
		{"TransactionDate month 13", success(itemReceipt, `{"Name":"TransactionDate","Value":20241321143055}`), "TransactionDate not a real date"},
		{"TransactionDate 30 February", success(itemReceipt, `{"Name":"TransactionDate","Value":20240230120000}`), "TransactionDate not a real date"},
		{"TransactionDate 29 February 2023", success(itemReceipt, `{"Name":"TransactionDate","Value":20230229120000}`), "TransactionDate not a real date"},
		{"TransactionDate hour 24", success(itemReceipt, `{"Name":"TransactionDate","Value":20240321240000}`), "TransactionDate not a real date"},
		{"TransactionDate second 60", success(itemReceipt, `{"Name":"TransactionDate","Value":20240321235960}`), "TransactionDate not a real date"},
		{"TransactionDate an object", success(itemReceipt, `{"Name":"TransactionDate","Value":{}}`), "TransactionDate not a number"},
		{"PhoneNumber fraction", success(itemReceipt, `{"Name":"PhoneNumber","Value":254712345678.5}`), "PhoneNumber not a phone number"},
		{"PhoneNumber huge", success(itemReceipt, `{"Name":"PhoneNumber","Value":2547123456789999999999}`), "PhoneNumber not a phone number"},
		{"PhoneNumber negative", success(itemReceipt, `{"Name":"PhoneNumber","Value":-254712345678}`), "PhoneNumber not a phone number"},
		{"PhoneNumber only control characters", success(itemReceipt, `{"Name":"PhoneNumber","Value":"\u0000\u0001"}`), "PhoneNumber malformed"},
		{"PhoneNumber empty", success(itemReceipt, `{"Name":"PhoneNumber","Value":""}`), "PhoneNumber malformed"},
		{"PhoneNumber an array", success(itemReceipt, `{"Name":"PhoneNumber","Value":[254712345678]}`), "PhoneNumber not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cb, err := ParseCallback([]byte(tt.body))
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("ParseCallback = %+v, %v; want an *InvalidError", cb, err)
			}
			if inv.Reason != tt.reason {
				t.Errorf("reason %q, want %q", inv.Reason, tt.reason)
			}
			if cb != (Callback{}) {
				t.Errorf("with an error, the callback should be zero: %+v", cb)
			}
		})
	}
}
