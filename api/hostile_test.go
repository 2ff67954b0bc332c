package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestCreateHostileBodies posts hostile bodies to the real handler: each
// gets a clear 4xx with a JSON error naming the problem, never a 500 or a
// crash, and nothing is published. What the rules allow (unicode in a
// reference) is taken as sent.
func TestCreateHostileBodies(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	const (
		phone = `"phone":"0712345678"`
		rest  = `"amount":1500,"reference":"INV-1"`
	)
	valid := func(extra string) string { return `{` + phone + `,` + rest + extra + `}` }
	withRef := func(ref string) string { return `{` + phone + `,"amount":1,"reference":` + ref + `}` }
	withAmount := func(amount string) string { return `{` + phone + `,"amount":` + amount + `,"reference":"R"}` }
	deepArrays := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	deepObjects := strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000)

	tests := []struct {
		name, ctype, body string
		status            int
		message           string // the answer's message, exactly
		field             string // for a 422: the field whose error it is
	}{
		// Not JSON at all.
		{"empty body", ctJSON, ``, 422, "The phone field is required.", "phone"},
		{"only white space", ctJSON, " \r\n\t", 422, "The phone field is required.", "phone"},
		{"truncated", ctJSON, `{"phone":"0712345678","amount":`, 400, "The request body is not valid JSON: unexpected end of input.", ""},
		{"single quotes", ctJSON, `{'phone':'0712345678'}`, 400, "The request body is not valid JSON: invalid character '\\''.", ""},
		{"trailing comma", ctJSON, valid(`,`), 400, "The request body is not valid JSON: invalid character '}' looking for beginning of object key string.", ""},
		{"trailing garbage", ctJSON, valid(``) + `garbage`, 400, "The request body must be a single JSON object.", ""},
		{"two objects", ctJSON, valid(``) + valid(``), 400, "The request body must be a single JSON object.", ""},
		{"an array", ctJSON, `[` + valid(``) + `]`, 400, "The request body must be a JSON object.", ""},
		{"a string", ctJSON, `"0712345678"`, 400, "The request body must be a JSON object.", ""},
		{"null", ctJSON, `null`, 400, "The request body must be a JSON object.", ""},
		{"byte order mark", ctJSON, "\xef\xbb\xbf" + valid(``), 400, "The request body must not start with a byte order mark.", ""},
		{"UTF-16", ctJSON + "; charset=utf-16", "\xff\xfe{\x00}\x00", 400, "The request body is not valid JSON: invalid character 'ÿ' looking for beginning of value.", ""},
		{"NUL byte between fields", ctJSON, `{` + phone + ",\x00" + rest + `}`, 400, "The request body is not valid JSON: invalid character '\\x00' looking for beginning of object key string.", ""},
		{"NUL byte inside a string", ctJSON, withRef("\"IN\x00V\""), 400, "The request body is not valid JSON: invalid character '\\x00' in string literal.", ""},
		{"NUL bytes only", ctJSON, "\x00\x00\x00\x00", 400, "The request body is not valid JSON: invalid character '\\x00' looking for beginning of value.", ""},

		// Ambiguous JSON.
		{"duplicate amount", ctJSON, valid(`,"amount":250000`), 400, "The request body has the amount field more than once.", ""},
		{"duplicate phone", ctJSON, valid(`,"phone":"0112345678"`), 400, "The request body has the phone field more than once.", ""},
		{"duplicate by escape", ctJSON, valid(`,"\u0061mount":250000`), 400, "The request body has the amount field more than once.", ""},
		{"duplicate unknown key", ctJSON, valid(`,"note":1,"note":2`), 400, "The request body has the note field more than once.", ""},
		{"duplicate nested key", ctJSON, valid(`,"meta":{"items":[{"amount":1,"amount":2}]}`), 400, "The request body has the meta.items[0].amount field more than once.", ""},
		{"duplicate odd key", ctJSON, valid(`,"a\u0000b":1,"a\u0000b":2`), 400, `The request body has the ["a\x00b"] field more than once.`, ""},
		{"10k nested arrays", ctJSON, valid(`,"x":` + deepArrays), 400, "The request body must not nest objects or arrays more than 32 levels deep.", ""},
		{"10k nested objects", ctJSON, deepObjects, 400, "The request body must not nest objects or arrays more than 32 levels deep.", ""},
		{"10k nested amount", ctJSON, withAmount(deepArrays), 400, "The request body must not nest objects or arrays more than 32 levels deep.", ""},
		{"10k unclosed", ctJSON, strings.Repeat("[", 10000), 400, "The request body must not nest objects or arrays more than 32 levels deep.", ""},

		// Wrong types.
		{"phone a bool", ctJSON, `{"phone":true,` + rest + `}`, 422, "The phone field must be a string.", "phone"},
		{"phone an object", ctJSON, `{"phone":{"n":"0712345678"},` + rest + `}`, 422, "The phone field must be a string.", "phone"},
		{"amount an array", ctJSON, withAmount(`[1500]`), 422, "The amount field must be an integer.", "amount"},
		{"amount a bool", ctJSON, withAmount(`true`), 422, "The amount field must be an integer.", "amount"},
		{"reference a number", ctJSON, withRef(`12345`), 422, "The reference field must be a string.", "reference"},
		{"tag an object", ctJSON, valid(`,"tag":{"a":1}`), 422, "The tag field must be a string.", "tag"},

		// Huge, negative and fractional numbers.
		{"amount 1e400", ctJSON, withAmount(`1e400`), 422, "The amount field must be an integer.", "amount"},
		{"amount -1e400", ctJSON, withAmount(`-1e400`), 422, "The amount field must be an integer.", "amount"},
		{"amount 2^63", ctJSON, withAmount(`9223372036854775808`), 422, "The amount field must not be greater than 250000.", "amount"},
		{"amount -2^63-1", ctJSON, withAmount(`-9223372036854775809`), 422, "The amount field must be at least 1.", "amount"},
		{"amount 400 digits", ctJSON, withAmount(strings.Repeat("9", 400)), 422, "The amount field must not be greater than 250000.", "amount"},
		{"amount negative", ctJSON, withAmount(`-1500`), 422, "The amount field must be at least 1.", "amount"},
		{"amount fraction", ctJSON, withAmount(`1500.5`), 422, "The amount field must be an integer.", "amount"},
		{"amount negative fraction", ctJSON, withAmount(`-0.5`), 422, "The amount field must be an integer.", "amount"},
		{"amount string 2^63", ctJSON, withAmount(`"9223372036854775808"`), 422, "The amount field must not be greater than 250000.", "amount"},
		{"amount NaN", ctJSON, withAmount(`NaN`), 400, "The request body is not valid JSON: invalid character 'N' looking for beginning of value.", ""},
		{"phone 1e400", ctJSON, `{"phone":1e400,` + rest + `}`, 422, "The phone field must be a valid Kenyan mobile number.", "phone"},

		// Unicode in the reference: what it may not hold.
		{"reference right-to-left override", ctJSON, withRef(`"INV-\u202e6904"`), 422, "The reference field must not contain invisible formatting characters.", "reference"},
		{"reference right-to-left mark", ctJSON, withRef("\"INV\u200f-1\""), 422, "The reference field must not contain invisible formatting characters.", "reference"},
		{"reference zero-width joiner", ctJSON, withRef(`"INV\u200d1"`), 422, "The reference field must not contain invisible formatting characters.", "reference"},
		{"reference escaped NUL", ctJSON, withRef(`"INV\u0000"`), 422, "The reference field must not contain control characters.", "reference"},
		{"reference invalid UTF-8", ctJSON, withRef("\"INV\xc3\x28\""), 422, "The reference field must be valid UTF-8 text.", "reference"},
		{"reference lone surrogate", ctJSON, withRef(`"INV\ud800"`), 422, "The reference field must be valid UTF-8 text.", "reference"},
		{"reference reversed surrogates", ctJSON, withRef(`"\udc00\ud800"`), 422, "The reference field must be valid UTF-8 text.", "reference"},
		{"reference 13 emoji", ctJSON, withRef(`"` + strings.Repeat("🙂", 13) + `"`), 422, "The reference field must not be greater than 12 characters.", "reference"},
		{"reference of combining marks", ctJSON, withRef(`"a` + strings.Repeat("\u0301", 12) + `"`), 422, "The reference field must not be greater than 12 characters.", "reference"},

		// Content types.
		{"XML", "application/xml", `<stk><phone>0712345678</phone></stk>`, 400, "The request body is not valid JSON: invalid character '<' looking for beginning of value.", ""},
		{"binary", "application/octet-stream", "\x89PNG\r\n\x1a\n\x00\x00", 400, "The request body is not valid JSON: invalid character '\\u0089' looking for beginning of value.", ""},
		{"multipart without boundary", "multipart/form-data", valid(``), 400, "The request body is not a valid form: no multipart boundary.", ""},
		{"multipart broken", "multipart/form-data; boundary=X", "--X\r\nnot a part", 400, "The request body is not a valid form.", ""},
		{"form with a bad escape", ctForm, "phone=%zz&amount=1&reference=R", 400, "The request body is not a valid form.", ""},
		{"form field twice", ctForm, "phone=0712345678&amount=1&amount=250000&reference=R", 400, "The request body has the amount field more than once.", ""},
		{"form NUL in reference", ctForm, "phone=0712345678&amount=1&reference=R%00", 422, "The reference field must not contain control characters.", "reference"},
		{"form broken JSON", ctForm, `{"phone":`, 400, "The request body is not valid JSON: unexpected end of input.", ""},
		{"content type garbage", "\x00;;=", valid(`,"amount":2`), 400, "The request body has the amount field more than once.", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.streamMsgs(t)
			r := e.do(t, newRequest(http.MethodPost, PushPath, acmeToken, tc.ctype, tc.body))
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.raw)
			}
			if r.body["success"] != false || r.body["message"] != tc.message {
				t.Errorf("answer %s; want message %q", r.raw, tc.message)
			}
			errs, hasErrs := r.body["errors"].(map[string]any)
			if (tc.status == 422) != hasErrs || (hasErrs && errs[tc.field] == nil) {
				t.Errorf("answer %s; want errors for %q only with a 422", r.raw, tc.field)
			}
			if n := e.streamMsgs(t); n != before {
				t.Errorf("a refused request published %d events", n-before)
			}
		})
	}
}

// TestCreateUnicodeReferences: what a reference may hold beyond ASCII is
// taken and published exactly as sent (trimmed), counted in code points.
func TestCreateUnicodeReferences(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	for _, ref := range []string{
		"PAY 💳🇰🇪",                         // emoji, a flag of two code points
		strings.Repeat("🙂", 12),           // 12 code points, 48 bytes
		"Cafe\u0301-12",                   // a combining accent
		"فاتورة ١٢",                       // Arabic letters and digits, no bidi controls
		"請求書-2024",                        // CJK
		"Ñandú\u00a0#1",                   // a no-break space inside
		"\u00a0 INV-1 \u3000",             // Unicode spaces around are trimmed
		strings.Repeat("\u0301", 1) + "x", // starting with a combining mark
	} {
		t.Run(ref, func(t *testing.T) {
			b, err := json.Marshal(ref)
			if err != nil {
				t.Fatal(err)
			}
			r := e.post(t, acmeToken, `{"phone":"0712345678","amount":1,"reference":`+string(b)+`}`)
			if r.status != http.StatusAccepted {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			id, _ := r.body["tracking_id"].(string)
			_, req, _ := e.requested(t, id)
			if want := strings.TrimSpace(ref); req.Reference != want {
				t.Errorf("published reference %q, want %q", req.Reference, want)
			}
		})
	}
}
