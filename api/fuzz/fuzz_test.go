// Package fuzz_test fuzzes the api's request decoding (DecodeRequest,
// NormalizePhone). The targets live here, apart from package api's own
// tests, because those link the embedded nats-server: fuzzing there would
// build and instrument a whole server for a one-second run. Nothing in this
// directory may import events/testkit.
package fuzz_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/stkgate/stkgate/api"
	"github.com/stkgate/stkgate/events/kit/uniquekeys"
)

const (
	ctJSON = "application/json"
	ctForm = "application/x-www-form-urlencoded"
)

// failure has the fields of the api's error body (api.failure) that come
// from a RequestError.
type failure struct {
	Message string          `json:"message"`
	Errors  api.FieldErrors `json:"errors,omitempty"`
}

// invisible is the api's rule for a reference: no format character (Cf).
func invisible(r rune) bool { return unicode.Is(unicode.Cf, r) }

// looksLikeJSON is the api's rule for a form body it reads as JSON.
func looksLikeJSON(body []byte) bool {
	b := bytes.TrimLeft(body, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

func FuzzNormalizePhone(f *testing.F) {
	for _, s := range []string{
		"0712345678", "0112345678", "712345678", "112345678", "254712345678", "+254112345678",
		"+254 712-345-678", "0812345678", "", "+", "2540712345678", "０７１２３４５６７８", "07123456\u200b78",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := api.NormalizePhone(s)
		if !ok {
			if got != "" {
				t.Fatalf("refused %q but returned %q", s, got)
			}
			return
		}
		if len(got) != 12 || !(strings.HasPrefix(got, "2547") || strings.HasPrefix(got, "2541")) ||
			strings.Trim(got, "0123456789") != "" {
			t.Fatalf("api.NormalizePhone(%q) = %q: not 2547/2541 and 12 digits", s, got)
		}
		// Normal form is a fixed point, and the subscriber digits survive.
		if again, ok := api.NormalizePhone(got); !ok || again != got {
			t.Fatalf("api.NormalizePhone(%q) = %q, %v; want it unchanged", got, again, ok)
		}
		digits := strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, s)
		if !strings.HasSuffix(digits, got[3:]) {
			t.Fatalf("api.NormalizePhone(%q) = %q: digits %q do not end in %q", s, got, digits, got[3:])
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	seeds := []struct{ ctype, body string }{
		{ctJSON, `{"phone":"0712345678","amount":1500,"reference":"INV-2024-001","tag":"loan-repayment"}`},
		{ctJSON, `{"phone":"+254 112-345-678","amount":"250000","reference":"ÄÖÜ"}`},
		{ctJSON, `{"phone":254712345678,"amount":1e3,"reference":"R","tag":null}`},
		{ctJSON, `{"amount":1,"amount":2}`},
		{ctJSON, `[[[[[[[[[[]]]]]]]]]]`},
		{ctJSON, `{"phone":"0712345678","amount":-99999999999999999999,"reference":"\u0000"}`},
		{ctJSON, ``},
		{ctForm, "phone=%2B254+712-345-604&amount=250&reference=FORM-1"},
		{ctForm, "phone=%zz"},
		{ctForm, `{"phone":"0712345678"}`},
		{"multipart/form-data; boundary=X", "--X\r\nContent-Disposition: form-data; name=\"phone\"\r\n\r\n0712345678\r\n--X--\r\n"},
		{"text/plain", "\xff\xfe"},
		{ctJSON, `{"phone":"0712345678","amount":1,"reference":"INV\u202e1"}`},
		{ctJSON, `{"phone":"0712345678","amount":1,"reference":"R","x":{"a":1,"a":2}}`},
		{ctJSON, `{"phone":"0712345678","amount":9223372036854775808,"reference":"R"}`},
		{ctJSON, "\xef\xbb\xbf{}"},
		{ctJSON, `{"phone":"0712345678","amount":1,"reference":"R","callback_url":"https://a.example/\ud800"}`},
		{ctForm, "phone=0712345678&amount=1&reference=R&callback_url=%FF&callback_url=x"},
	}
	for _, s := range seeds {
		f.Add(s.ctype, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, ctype string, body []byte) {
		req, err := api.DecodeRequest(ctype, body)
		if err != nil {
			var re *api.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %v (%T) is not a api.RequestError", err, err)
			}
			if re.Status != 400 && re.Status != 422 {
				t.Fatalf("status %d, want 400 or 422", re.Status)
			}
			if re.Message == "" || (re.Status == 422) != (len(re.Fields) > 0) {
				t.Fatalf("error %+v: message and fields do not agree with the status", re)
			}
			if _, err := json.Marshal(failure{Message: re.Message, Errors: re.Fields}); err != nil {
				t.Fatalf("error body does not marshal: %v", err)
			}
			return
		}
		// callback_url's URL is the handler's to check; here it is text.
		if !utf8.ValidString(req.CallbackURL) {
			t.Fatalf("callback_url %q is not valid UTF-8", req.CallbackURL)
		}
		if p, ok := api.NormalizePhone(req.Phone); !ok || p != req.Phone {
			t.Fatalf("phone %q not normal", req.Phone)
		}
		if req.Amount < api.MinAmount || req.Amount > api.MaxAmount {
			t.Fatalf("amount %d out of range", req.Amount)
		}
		for _, s := range []struct {
			v        string
			min, max int
		}{{req.Reference, 1, api.MaxReferenceLen}, {req.Tag, 0, api.MaxTagLen}} {
			n := utf8.RuneCountInString(s.v)
			if n < s.min || n > s.max || !utf8.ValidString(s.v) || strings.ContainsFunc(s.v, unicode.IsControl) || strings.TrimSpace(s.v) != s.v {
				t.Fatalf("text %q breaks its rules", s.v)
			}
		}
		if strings.ContainsFunc(req.Reference, invisible) {
			t.Fatalf("reference %q has invisible characters", req.Reference)
		}
		// A JSON body that was taken has no key twice anywhere: which
		// value counts would otherwise depend on the parser.
		if mt, _, _ := mime.ParseMediaType(ctype); mt != "multipart/form-data" && (mt != ctForm || looksLikeJSON(body)) {
			if err := uniquekeys.Check(body, api.MaxJSONDepth); err != nil {
				t.Fatalf("accepted %q: %v", body, err)
			}
		}
		// What was taken means one thing: written back as JSON, it reads
		// the same, and so does reading the input again.
		fields := map[string]any{"phone": req.Phone, "amount": req.Amount, "reference": req.Reference}
		if req.Tag != "" {
			fields["tag"] = req.Tag
		}
		b, err := json.Marshal(fields)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := api.DecodeRequest(ctJSON, b); err != nil || again != req {
			t.Fatalf("%s, written back from %+v, reads %+v, %v", b, req, again, err)
		}
		if again, err := api.DecodeRequest(ctype, body); err != nil || again != req {
			t.Fatalf("read twice: %+v then %+v, %v", req, again, err)
		}
	})
}

// FuzzRecordBody holds the poll's hand-written answer (api.AppendRecordBody)
// to encoding/json's bytes, as echo's c.JSON sent them, for any strings in
// any field, each nullable one null or not as mask's bits say.
func FuzzRecordBody(f *testing.F) {
	f.Add(int64(1), 0, uint32(0), "550e8400-e29b-41d4-a716-446655440000", "254712345678", "INV-2024-001", "Pending")
	f.Add(int64(-9), 1, ^uint32(0), "<a href=\"x\">&amp;</a>", "\\\x00\x1f\x7f\b\f\n\r\t", "\xff\xfe\xc3", "\u2028\u2029é漢字")
	f.Add(int64(9223372036854775807), -1, uint32(0x5555), "", " ", "\"", "'")
	// Each character encoding/json escapes, alone in its string.
	f.Add(int64(0), 0, ^uint32(0), "a&b", "a<b", "a>b", "a\\b")
	f.Add(int64(0), 0, ^uint32(0), "a\u2028", "\x7f", "a\x80", "\x01")
	f.Fuzz(func(t *testing.T, id int64, status int, mask uint32, a, b, c, d string) {
		strs := []string{a, b, c, d}
		n, bit := 0, 0
		next := func() string { n++; return strs[n%len(strs)] }
		nullable := func() *string {
			bit++
			if mask&(1<<(bit%32)) == 0 {
				return nil
			}
			s := next()
			return &s
		}
		v := api.RecordView{
			ID: id, TrackingID: next(), PhoneNumber: next(), Amount: next(), Reference: next(), Tag: nullable(),
			Status: status, StatusLabel: next(), ResponseCode: nullable(), ResponseDescription: nullable(),
			TransactionCode: nullable(), MerchantRequestID: nullable(), CheckoutRequestID: nullable(),
			Meta:      api.MetaView{TransactionDate: nullable()},
			CreatedAt: next(), UpdatedAt: next(),
		}
		if mask&1 != 0 {
			v.Meta.LateResult = &api.LateResultView{
				ResponseCode: next(), ResponseDescription: nullable(), StatusLabel: next(), TransactionCode: nullable(),
				TransactionDate: nullable(), MerchantRequestID: nullable(), CheckoutRequestID: nullable(),
				Source: nullable(), LearntAt: next(),
			}
		}
		var want bytes.Buffer
		body := struct {
			Success bool           `json:"success"`
			Data    api.RecordView `json:"data"`
		}{true, v}
		if err := json.NewEncoder(&want).Encode(body); err != nil {
			t.Fatal(err)
		}
		if got := api.AppendRecordBody(nil, &v); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("api.AppendRecordBody:\n%s\nencoding/json:\n%s", got, want.Bytes())
		}
	})
}
