package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

const (
	ctJSON = "application/json"
	ctForm = "application/x-www-form-urlencoded"
)

func TestDecodeRequestValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, ctype, body string
		want              Request
	}{
		{"json", ctJSON, `{"phone":"0712345678","amount":1500,"reference":"INV-2024-001","tag":"loan-repayment"}`,
			Request{Phone: "254712345678", Amount: 1500, Reference: "INV-2024-001", Tag: "loan-repayment"}},
		{"json with charset", "application/json; charset=utf-8", `{"phone":"0712345678","amount":1,"reference":"R"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R"}},
		{"no content type is JSON", "", `{"phone":"0712345678","amount":1,"reference":"R"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R"}},
		{"text/plain is JSON", "text/plain", `{"phone":"0712345678","amount":1,"reference":"R"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R"}},
		{"amount as a string of digits", ctJSON, `{"phone":"0712345678","amount":"1500","reference":"R"}`,
			Request{Phone: "254712345678", Amount: 1500, Reference: "R"}},
		{"amount string with spaces", ctJSON, `{"phone":"0712345678","amount":" 250000 ","reference":"R"}`,
			Request{Phone: "254712345678", Amount: 250000, Reference: "R"}},
		{"amount bounds low", ctJSON, `{"phone":"0712345678","amount":1,"reference":"R"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R"}},
		{"amount bounds high", ctJSON, `{"phone":"0712345678","amount":250000,"reference":"R"}`,
			Request{Phone: "254712345678", Amount: 250000, Reference: "R"}},
		{"phone as a JSON number", ctJSON, `{"phone":254712345678,"amount":1,"reference":"R"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R"}},
		{"every phone format", ctJSON, `{"phone":"+254 112-345-678","amount":1,"reference":"R"}`,
			Request{Phone: "254112345678", Amount: 1, Reference: "R"}},
		{"reference of 12 characters, not bytes", ctJSON, `{"phone":"0712345678","amount":1,"reference":"ÄÖÜäöüßéèêëï"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "ÄÖÜäöüßéèêëï"}},
		{"reference and tag trimmed", ctJSON, `{"phone":"0712345678","amount":1,"reference":"  INV-1 \t","tag":"  x  "}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "INV-1", Tag: "x"}},
		// What a reference may hold beyond ASCII: any visible character,
		// counted as code points (a combining accent is one of its own).
		{"reference emoji", ctJSON, `{"phone":"0712345678","amount":1,"reference":"PAY 💳🇰🇪"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "PAY 💳🇰🇪"}},
		{"reference twelve emoji", ctJSON, `{"phone":"0712345678","amount":1,"reference":"` + strings.Repeat("😀", 12) + `"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: strings.Repeat("😀", 12)}},
		{"reference combining accents", ctJSON, `{"phone":"0712345678","amount":1,"reference":"Cafe\u0301-12"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "Cafe\u0301-12"}},
		{"reference Arabic letters", ctJSON, `{"phone":"0712345678","amount":1,"reference":"فاتورة ١٢"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "فاتورة ١٢"}},
		{"reference CJK escaped", ctJSON, `{"phone":"0712345678","amount":1,"reference":"\u8acb\u6c42\u66f8"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "請求書"}},
		{"reference with a replacement character sent as such", ctJSON, `{"phone":"0712345678","amount":1,"reference":"A\ufffdB�"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "A\uFFFDB\uFFFD"}},
		{"reference with an escaped surrogate pair", ctJSON, `{"phone":"0712345678","amount":1,"reference":"\ud83d\ude00"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "😀"}},
		{"tag null", ctJSON, `{"phone":"0712345678","amount":1,"reference":"R","tag":null}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R"}},
		{"tag empty", ctJSON, `{"phone":"0712345678","amount":1,"reference":"R","tag":"   "}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R"}},
		{"tag of 255 characters", ctJSON, `{"phone":"0712345678","amount":1,"reference":"R","tag":"` + strings.Repeat("é", 255) + `"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R", Tag: strings.Repeat("é", 255)}},
		{"unknown fields ignored", ctJSON, `{"phone":"0712345678","amount":1,"reference":"R","Callback_url":"http://x","Phone":"nope","extra":{"a":[1,2]}}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R"}},
		// callback_url was an unknown field once; now read, its URL
		// checked by the handler (checkCallbackURL), not here.
		{"callback_url", ctJSON, `{"phone":"0712345678","amount":1,"reference":"R","callback_url":"http://x"}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R", CallbackURL: "http://x"}},
		{"callback_url null", ctJSON, `{"phone":"0712345678","amount":1,"reference":"R","callback_url":null}`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R"}},
		{"callback_url in a form", ctForm, `phone=0712345678&amount=1&reference=R&callback_url=https%3A%2F%2Fa.example%2F`,
			Request{Phone: "254712345678", Amount: 1, Reference: "R", CallbackURL: "https://a.example/"}},
		{"white space around", ctJSON, "\n\t {\"phone\":\"0712345678\",\"amount\":1,\"reference\":\"R\"} \n",
			Request{Phone: "254712345678", Amount: 1, Reference: "R"}},
		{"form", ctForm, "phone=%2B254+712-345-604&amount=250&reference=FORM-1",
			Request{Phone: "254712345604", Amount: 250, Reference: "FORM-1"}},
		{"form with tag", ctForm + "; charset=UTF-8", "phone=0712345678&amount=1500&reference=INV&tag=loan%20repayment",
			Request{Phone: "254712345678", Amount: 1500, Reference: "INV", Tag: "loan repayment"}},
		{"form with empty tag", ctForm, "phone=0712345678&amount=1500&reference=INV&tag=",
			Request{Phone: "254712345678", Amount: 1500, Reference: "INV"}},
		{"JSON sent as a form", ctForm, `{"phone":"0712345678","amount":10,"reference":"R"}`,
			Request{Phone: "254712345678", Amount: 10, Reference: "R"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeRequest(tc.ctype, []byte(tc.body))
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeRequestMultipart(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for k, v := range map[string]string{"phone": "0712345678", "amount": "99", "reference": "MP-1"} {
		if err := w.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	fw, err := w.CreateFormFile("tag", "tag.txt") // a file is not a field
	if err != nil {
		t.Fatal(err)
	}
	fw.Write([]byte("ignored"))
	w.Close()
	got, err := DecodeRequest(w.FormDataContentType(), b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if want := (Request{Phone: "254712345678", Amount: 99, Reference: "MP-1"}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := DecodeRequest("multipart/form-data", b.Bytes()); status(err) != http.StatusBadRequest {
		t.Errorf("multipart without boundary: %v, want 400", err)
	}
}

func status(err error) int {
	var re *RequestError
	if errors.As(err, &re) {
		return re.Status
	}
	return 0
}

// valid fields, to which each case adds one bad field.
func body(fields map[string]string) string {
	base := map[string]string{"phone": `"0712345678"`, "amount": `1500`, "reference": `"INV-1"`}
	for k, v := range fields {
		if v == "" {
			delete(base, k)
		} else {
			base[k] = v
		}
	}
	var parts []string
	for _, k := range []string{"phone", "amount", "reference", "tag"} {
		if v, ok := base[k]; ok {
			parts = append(parts, `"`+k+`":`+v)
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestDecodeRequestInvalid(t *testing.T) {
	t.Parallel()
	const (
		phoneRequired = "The phone field is required."
		phoneInvalid  = "The phone field must be a valid Kenyan mobile number."
		phoneString   = "The phone field must be a string."
		amtRequired   = "The amount field is required."
		amtInt        = "The amount field must be an integer."
		amtMin        = "The amount field must be at least 1."
		amtMax        = "The amount field must not be greater than 250000."
		refRequired   = "The reference field is required."
		refString     = "The reference field must be a string."
		refMax        = "The reference field must not be greater than 12 characters."
		refControl    = "The reference field must not contain control characters."
		refUTF8       = "The reference field must be valid UTF-8 text."
		refInvisible  = "The reference field must not contain invisible formatting characters."
		tagString     = "The tag field must be a string."
		tagMax        = "The tag field must not be greater than 255 characters."
		tagControl    = "The tag field must not contain control characters."
		tagUTF8       = "The tag field must be valid UTF-8 text."
	)
	type c struct {
		name   string
		fields map[string]string // "" removes a field
		field  string
		msg    string
	}
	tests := []c{
		{"phone missing", map[string]string{"phone": ""}, "phone", phoneRequired},
		{"phone null", map[string]string{"phone": "null"}, "phone", phoneRequired},
		{"phone empty", map[string]string{"phone": `""`}, "phone", phoneRequired},
		{"phone blank", map[string]string{"phone": `"   "`}, "phone", phoneRequired},
		{"phone 08", map[string]string{"phone": `"0812345678"`}, "phone", phoneInvalid},
		{"phone short", map[string]string{"phone": `"071234567"`}, "phone", phoneInvalid},
		{"phone letters", map[string]string{"phone": `"07123456ab"`}, "phone", phoneInvalid},
		{"phone Tanzania", map[string]string{"phone": `"+255712345678"`}, "phone", phoneInvalid},
		{"phone negative number", map[string]string{"phone": `-712345678`}, "phone", phoneInvalid},
		{"phone float", map[string]string{"phone": `7.12345678e8`}, "phone", phoneInvalid},
		{"phone bool", map[string]string{"phone": `true`}, "phone", phoneString},
		{"phone array", map[string]string{"phone": `["0712345678"]`}, "phone", phoneString},
		{"phone object", map[string]string{"phone": `{"n":"0712345678"}`}, "phone", phoneString},

		{"amount missing", map[string]string{"amount": ""}, "amount", amtRequired},
		{"amount null", map[string]string{"amount": "null"}, "amount", amtRequired},
		{"amount empty string", map[string]string{"amount": `""`}, "amount", amtRequired},
		{"amount fraction", map[string]string{"amount": `1.5`}, "amount", amtInt},
		{"amount whole fraction", map[string]string{"amount": `100.0`}, "amount", amtInt},
		{"amount exponent", map[string]string{"amount": `1e3`}, "amount", amtInt},
		{"amount exponent upper", map[string]string{"amount": `1E3`}, "amount", amtInt},
		{"amount string fraction", map[string]string{"amount": `"1.5"`}, "amount", amtInt},
		{"amount string letters", map[string]string{"amount": `"abc"`}, "amount", amtInt},
		{"amount string plus", map[string]string{"amount": `"+5"`}, "amount", amtInt},
		{"amount string leading zero", map[string]string{"amount": `"0100"`}, "amount", amtInt},
		{"amount string hex", map[string]string{"amount": `"0x10"`}, "amount", amtInt},
		{"amount string inner space", map[string]string{"amount": `"1 500"`}, "amount", amtInt},
		{"amount string comma", map[string]string{"amount": `"1,500"`}, "amount", amtInt},
		{"amount string minus only", map[string]string{"amount": `"-"`}, "amount", amtInt},
		{"amount true", map[string]string{"amount": `true`}, "amount", amtInt},
		{"amount false", map[string]string{"amount": `false`}, "amount", amtInt},
		{"amount array", map[string]string{"amount": `[1500]`}, "amount", amtInt},
		{"amount object", map[string]string{"amount": `{}`}, "amount", amtInt},
		{"amount zero", map[string]string{"amount": `0`}, "amount", amtMin},
		{"amount minus zero", map[string]string{"amount": `-0`}, "amount", amtMin},
		{"amount negative", map[string]string{"amount": `-5`}, "amount", amtMin},
		{"amount string zero", map[string]string{"amount": `"0"`}, "amount", amtMin},
		{"amount string negative", map[string]string{"amount": `"-5"`}, "amount", amtMin},
		{"amount over cap", map[string]string{"amount": `250001`}, "amount", amtMax},
		{"amount string over cap", map[string]string{"amount": `"250001"`}, "amount", amtMax},
		{"amount huge", map[string]string{"amount": `99999999999999999999999999`}, "amount", amtMax},
		{"amount 1e400", map[string]string{"amount": `1e400`}, "amount", amtInt},
		{"amount negative fraction", map[string]string{"amount": `-1.5`}, "amount", amtInt},
		{"amount int64 max", map[string]string{"amount": `9223372036854775807`}, "amount", amtMax},
		{"amount int64 min", map[string]string{"amount": `-9223372036854775808`}, "amount", amtMin},
		{"amount string 1e400", map[string]string{"amount": `"1e400"`}, "amount", amtInt},
		{"amount string NUL", map[string]string{"amount": `"15\u000000"`}, "amount", amtInt},
		{"amount int64 overflow by one", map[string]string{"amount": `9223372036854775808`}, "amount", amtMax},
		{"amount huge negative", map[string]string{"amount": `-99999999999999999999999999`}, "amount", amtMin},
		{"amount huge string", map[string]string{"amount": `"99999999999999999999999999"`}, "amount", amtMax},

		{"reference missing", map[string]string{"reference": ""}, "reference", refRequired},
		{"reference null", map[string]string{"reference": "null"}, "reference", refRequired},
		{"reference empty", map[string]string{"reference": `""`}, "reference", refRequired},
		{"reference blank", map[string]string{"reference": `"  \t "`}, "reference", refRequired},
		{"reference 13 characters", map[string]string{"reference": `"THIRTEEN-CHAR"`}, "reference", refMax},
		{"reference 13 runes", map[string]string{"reference": `"ÄÖÜäöüßéèêëïô"`}, "reference", refMax},
		{"reference number", map[string]string{"reference": `12345`}, "reference", refString},
		{"reference bool", map[string]string{"reference": `false`}, "reference", refString},
		{"reference array", map[string]string{"reference": `["a"]`}, "reference", refString},
		{"reference NUL", map[string]string{"reference": `"INV\u0000"`}, "reference", refControl},
		{"reference newline", map[string]string{"reference": `"IN\nV"`}, "reference", refControl},
		{"reference DEL", map[string]string{"reference": "\"IN\x7fV\""}, "reference", refControl},
		{"reference C1 control", map[string]string{"reference": `"IN\u0085V"`}, "reference", refControl},
		{"reference bad UTF-8", map[string]string{"reference": "\"IN\xffV\""}, "reference", refUTF8},
		{"reference right-to-left mark", map[string]string{"reference": `"INV\u200f-1"`}, "reference", refInvisible},
		{"reference right-to-left override", map[string]string{"reference": `"INV-\u202e6904"`}, "reference", refInvisible},
		{"reference isolate", map[string]string{"reference": "\"INV-\u2067x\u2069\""}, "reference", refInvisible},
		{"reference zero-width space", map[string]string{"reference": `"INV\u200b1"`}, "reference", refInvisible},
		{"reference inner byte order mark", map[string]string{"reference": `"INV\ufeff1"`}, "reference", refInvisible},
		{"reference 13 emoji", map[string]string{"reference": `"` + strings.Repeat("😀", 13) + `"`}, "reference", refMax},
		{"reference 1 letter and 12 accents", map[string]string{"reference": `"e` + strings.Repeat("\u0301", 12) + `"`}, "reference", refMax},
		{"reference lone surrogate", map[string]string{"reference": `"INV\ud83d"`}, "reference", refUTF8},
		{"reference escaped NUL", map[string]string{"reference": `"\u0000"`}, "reference", refControl},

		{"tag number", map[string]string{"tag": `5`}, "tag", tagString},
		{"tag object", map[string]string{"tag": `{}`}, "tag", tagString},
		{"tag 256 characters", map[string]string{"tag": `"` + strings.Repeat("é", 256) + `"`}, "tag", tagMax},
		{"tag NUL", map[string]string{"tag": `"a\u0000b"`}, "tag", tagControl},
		{"tag bad UTF-8", map[string]string{"tag": "\"a\xc3b\""}, "tag", tagUTF8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := body(tc.fields)
			_, err := DecodeRequest(ctJSON, []byte(b))
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("DecodeRequest(%s) error = %v, want a RequestError", b, err)
			}
			want := &RequestError{
				Status:  http.StatusUnprocessableEntity,
				Message: tc.msg,
				Fields:  FieldErrors{{Field: tc.field, Messages: []string{tc.msg}}},
			}
			if diff := cmp.Diff(want, re); diff != "" {
				t.Errorf("DecodeRequest(%s) (-want +got):\n%s", b, diff)
			}
		})
	}
}

func TestDecodeRequestFieldOrder(t *testing.T) {
	t.Parallel()
	// Every field wrong: the first error is phone's, and the errors object
	// lists the fields in the request's order.
	_, err := DecodeRequest(ctJSON, []byte(`{"tag":1,"reference":"","amount":1.5,"phone":"x"}`))
	var re *RequestError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v", err)
	}
	if re.Message != "The phone field must be a valid Kenyan mobile number." {
		t.Errorf("message = %q", re.Message)
	}
	b, err := json.Marshal(failure{Message: re.Message, Errors: re.Fields})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"success":false,"message":"The phone field must be a valid Kenyan mobile number.","errors":{` +
		`"phone":["The phone field must be a valid Kenyan mobile number."],` +
		`"amount":["The amount field must be an integer."],` +
		`"reference":["The reference field is required."],` +
		`"tag":["The tag field must be a string."]}}`
	if string(b) != want {
		t.Errorf("body\n got %s\nwant %s", b, want)
	}

	// Empty bodies and objects are every required field missing.
	for _, in := range []string{``, `  `, `{}`} {
		_, err := DecodeRequest(ctJSON, []byte(in))
		if !errors.As(err, &re) || re.Status != 422 || re.Message != "The phone field is required." ||
			len(re.Fields) != 3 || re.Fields[1].Field != "amount" || re.Fields[2].Field != "reference" {
			t.Errorf("DecodeRequest(%q) = %+v", in, err)
		}
	}
}

func TestDecodeRequestForm(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body, field, msg string
	}{
		{"amount=1&reference=R", "phone", "The phone field is required."},
		{"phone=&amount=1&reference=R", "phone", "The phone field is required."},
		{"phone=0812345678&amount=1&reference=R", "phone", "The phone field must be a valid Kenyan mobile number."},
		{"phone=0712345678&amount=1.5&reference=R", "amount", "The amount field must be an integer."},
		{"phone=0712345678&amount=abc&reference=R", "amount", "The amount field must be an integer."},
		{"phone=0712345678&amount=0&reference=R", "amount", "The amount field must be at least 1."},
		{"phone=0712345678&amount=-3&reference=R", "amount", "The amount field must be at least 1."},
		{"phone=0712345678&amount=&reference=R", "amount", "The amount field is required."},
		{"phone=0712345678&amount=1", "reference", "The reference field is required."},
		{"phone=0712345678&amount=1&reference=THIRTEEN-CHAR", "reference", "The reference field must not be greater than 12 characters."},
		{"phone=0712345678&amount=1&reference=A%00B", "reference", "The reference field must not contain control characters."},
		{"phone=0712345678&amount=1&reference=A%FFB", "reference", "The reference field must be valid UTF-8 text."},
		{"phone=0712345678&amount=1&reference=R&tag=" + strings.Repeat("x", 256), "tag", "The tag field must not be greater than 255 characters."},
		{"phone[]=0712345678&amount=1&reference=R", "phone", "The phone field is required."},
	}
	for _, tc := range tests {
		_, err := DecodeRequest(ctForm, []byte(tc.body))
		var re *RequestError
		if !errors.As(err, &re) || re.Status != 422 || re.Message != tc.msg || re.Fields[0].Field != tc.field {
			t.Errorf("DecodeRequest(form %q) = %v; want 422 %s: %q", tc.body, err, tc.field, tc.msg)
		}
	}
}

func TestDecodeRequestMalformed(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	tests := []struct {
		name, ctype, body, msg string
	}{
		{"truncated", ctJSON, `{"phone":`, "The request body is not valid JSON: unexpected end of input."},
		{"garbage", ctJSON, `phone=0712345678`, "The request body is not valid JSON: invalid character 'p' looking for beginning of value."},
		{"trailing comma", ctJSON, `{"phone":"0712345678",}`, "The request body is not valid JSON: invalid character '}' looking for beginning of object key string."},
		{"array", ctJSON, `[{"phone":"0712345678"}]`, "The request body must be a JSON object."},
		{"string", ctJSON, `"hello"`, "The request body must be a JSON object."},
		{"null", ctJSON, `null`, "The request body must be a JSON object."},
		{"number", ctJSON, `42`, "The request body must be a JSON object."},
		{"two objects", ctJSON, `{} {}`, "The request body must be a single JSON object."},
		{"trailing garbage", ctJSON, `{"phone":"0712345678"}x`, "The request body must be a single JSON object."},
		{"duplicate amount", ctJSON, `{"phone":"0712345678","amount":1,"amount":250000,"reference":"R"}`, "The request body has the amount field more than once."},
		{"duplicate phone", ctJSON, `{"phone":"0712345678","phone":"0112345678","amount":1,"reference":"R"}`, "The request body has the phone field more than once."},
		// An unknown field repeated is refused too: a field unknown today
		// may be read tomorrow, and a body with a key twice means different
		// things to different parsers.
		{"unknown field repeated", ctJSON, `{"x":1,"x":2,"phone":"0712345678","amount":1,"reference":"R"}`, "The request body has the x field more than once."},
		{"duplicate nested", ctJSON, `{"phone":"0712345678","amount":1,"reference":"R","meta":{"a":[{"k":1,"k":2}]}}`, "The request body has the meta.a[0].k field more than once."},
		{"duplicate by escape", ctJSON, `{"amount":1,"\u0061mount":2,"phone":"0712345678","reference":"R"}`, "The request body has the amount field more than once."},
		{"duplicate odd key", ctJSON, `{"a b":1,"a b":2}`, `The request body has the ["a b"] field more than once.`},
		{"duplicate in broken JSON", ctJSON, `{"amount":1,"amount":2,`, "The request body has the amount field more than once."},
		{"deeply nested", ctJSON, `{"extra":` + deep + `,"phone":"0712345678","amount":1,"reference":"R"}`, "The request body must not nest objects or arrays more than 32 levels deep."},
		{"deeply nested amount", ctJSON, `{"amount":` + deep + `}`, "The request body must not nest objects or arrays more than 32 levels deep."},
		{"nested one level too deep", ctJSON, `{"x":` + strings.Repeat("[", MaxJSONDepth) + strings.Repeat("]", MaxJSONDepth) + `}`, "The request body must not nest objects or arrays more than 32 levels deep."},
		{"byte order mark", ctJSON, "\xef\xbb\xbf" + `{"phone":"0712345678","amount":1,"reference":"R"}`, "The request body must not start with a byte order mark."},
		{"unclosed", ctJSON, `{"phone":"0712345678"`, "The request body is not valid JSON: unexpected end of input."},
		{"NUL outside a string", ctJSON, "{\"phone\":\"0712345678\"\x00}", "The request body is not valid JSON: invalid character '\\x00' after object key:value pair."},
		{"single quotes", ctJSON, `{'phone':'0712345678'}`, "The request body is not valid JSON: invalid character '\\''."},
		{"bad escape", ctJSON, `{"reference":"\x"}`, "The request body is not valid JSON: invalid character 'x' in string escape code."},
		{"form duplicate", ctForm, "phone=0712345678&amount=1&amount=2&reference=R", "The request body has the amount field more than once."},
		{"form bad escape", ctForm, "phone=%zz&amount=1&reference=R", "The request body is not a valid form."},
		{"form semicolon", ctForm, "phone=0712345678;amount=1", "The request body is not a valid form."},
		{"form JSON-looking but broken", ctForm, `{"phone":`, "The request body is not valid JSON: unexpected end of input."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeRequest(tc.ctype, []byte(tc.body))
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error = %v, want a RequestError", err)
			}
			if re.Status != http.StatusBadRequest || re.Message != tc.msg || re.Fields != nil {
				t.Errorf("got %d %q %v; want 400 %q", re.Status, re.Message, re.Fields, tc.msg)
			}
		})
	}
}

// BenchmarkDecodeRequest decodes and validates an ordinary request body,
// as every accept does.
func BenchmarkDecodeRequest(b *testing.B) {
	body := []byte(validBody)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeRequest(ctJSON, body); err != nil {
			b.Fatal(err)
		}
	}
}

// TestJSONStringValues: a string field reads as encoding/json decodes it,
// with badUTF8 where decoding made up a U+FFFD, whether or not it is
// plain (plainString) enough to be taken as it is.
func TestJSONStringValues(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		`""`, `"INV-2024-001"`, `"0712 345-678"`, `"Mpesa ✓ ünïcödé"`, `"\uFFFD literal: ` + "\uFFFD" + `"`,
		`"a\"b"`, `"a\\b"`, `"tab\tescaped"`, `"\u00e9"`, `"\ud800"`, `"\ufffd"`, "\"bad \xff utf8\"", "\"cut \xe2\x82\"",
		`"/slash\/"`, "\"\x7f del\"",
	} {
		got, err := jsonValue(json.RawMessage(raw))
		if err != nil {
			t.Errorf("%q: %v", raw, err)
			continue
		}
		var want string
		if err := json.Unmarshal([]byte(raw), &want); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		wantBad := !utf8.Valid([]byte(raw)) || replaced(json.RawMessage(raw), want)
		if got.kind != kindString || got.text != want || got.badUTF8 != wantBad {
			t.Errorf("%q: %+v, want text %q badUTF8 %v", raw, got, want, wantBad)
		}
		inner := raw[1 : len(raw)-1]
		_, plain := plainString([]byte(raw))
		if wantPlain := !strings.Contains(inner, `\`) && utf8.ValidString(inner); plain != wantPlain {
			t.Errorf("%q: plain %v, want %v", raw, plain, wantPlain)
		}
	}
}
