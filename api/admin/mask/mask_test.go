package mask_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/api/admin/mask"
	"github.com/stkgate/stkgate/events"
)

const id = "0b9e2f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"

func TestJSON(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"data":{"phone":"254712345678","amount":10}}`, `{"data":{"amount":10,"phone":"*********678"}}`},
		{`{"Item":[{"Name":"PhoneNumber","Value":254712345678},{"Name":"Amount","Value":1}]}`,
			`{"Item":[{"Name":"PhoneNumber","Value":"*********678"},{"Name":"Amount","Value":1}]}`},
		{`{"phone_number":null,"MSISDN":true,"Phone":{"a":1}}`, `{"MSISDN":"REDACTED","Phone":"REDACTED","phone_number":null}`},
		{`{"ResultDesc":"phone 254712345678 is wrong"}`, `{"ResultDesc":"phone *********678 is wrong"}`},
		{`{"d":"0712345678, 712345678 or 254112345678"}`, `{"d":"*******678, ******678 or *********678"}`},
		{`{"CheckoutRequestID":"ws_CO_191220191020363925","n":"123456789012"}`, `{"CheckoutRequestID":"ws_CO_191220191020363925","n":"123456789012"}`},
		{`{"phone":"12"}`, `{"phone":"**"}`},
		{`[1, "a"]`, `[1,"a"]`},
		{`not json`, ``},
		{`{"a":1} {"b":2}`, ``},
		{``, ``},
		{strings.Repeat(`[`, 100) + strings.Repeat(`]`, 100), ``},
	} {
		if got := string(mask.JSON([]byte(tc.in))); got != tc.want {
			t.Errorf("JSON(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"POST " + events.CallbackPath + id + "/tok3n from 254712345678", "POST " + events.CallbackPath + id + "/REDACTED from *********678"},
		{`path "` + events.CallbackPath + `tok3n" refused`, `path "REDACTED" refused`},
		{"nothing here", "nothing here"},
	} {
		if got := mask.Text(tc.in); got != tc.want {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{events.CallbackPath + id + "/tok3n", events.CallbackPath + id + "/REDACTED"},
		{events.CallbackPath + id, events.CallbackPath + id},
		{events.CallbackPath + id + "?token=x", events.CallbackPath + id + "/REDACTED"},
		{events.CallbackPath + id + "/a/b", events.CallbackPath + id + "/REDACTED"},
		{events.CallbackPath + "tok3n/" + id, "REDACTED"},
		{events.CallbackPath + strings.ToUpper(id) + "/t", "REDACTED"},
		{"/other/" + id + "/tok3n", "REDACTED"},
		{"", ""},
	} {
		if got := mask.Path(tc.in); got != tc.want {
			t.Errorf("Path(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// phoneRun finds a masked text's runs of digits, none of which may be
// shaped like a phone.
var phoneRun = regexp.MustCompile(`[0-9]+`)

func showsPhone(s string) bool {
	for _, run := range phoneRun.FindAllString(s, -1) {
		if mask.PhoneLike(run) {
			return true
		}
	}
	return false
}

func FuzzJSON(f *testing.F) {
	f.Add([]byte(`{"data":{"phone":"254712345678"}}`))
	f.Add([]byte(`{"Body":{"stkCallback":{"CallbackMetadata":{"Item":[{"Name":"PhoneNumber","Value":254712345678}]}}}}`))
	f.Add([]byte(`[{"phone":1e30},"2547123456789"]`))
	f.Add([]byte(`{"Name":"phone","Value":{"x":"254712345678"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out := mask.JSON(b)
		if out == nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("not JSON: %s", out)
		}
		var v any
		d := json.NewDecoder(bytes.NewReader(out))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			t.Fatal(err)
		}
		check(t, v, false)
	})
}

// check fails on a string or number holding a phone's run of digits, and
// on a phone's value that is not masked.
func check(t *testing.T, v any, phone bool) {
	switch x := v.(type) {
	case map[string]any:
		named := false
		if n, ok := x["Name"].(string); ok && regexp.MustCompile(`(?i)phone|msisdn`).MatchString(n) {
			named = true
		}
		for k, val := range x {
			check(t, val, regexp.MustCompile(`(?i)phone|msisdn`).MatchString(k) || (named && k == "Value"))
		}
	case []any:
		for _, val := range x {
			check(t, val, false)
		}
	case string:
		if showsPhone(x) {
			t.Fatalf("a phone number shows: %q", x)
		}
		if phone && len(x) > 3 && strings.Trim(x[:len(x)-3], "*") != "" && x != "REDACTED" {
			t.Fatalf("a phone shows: %q", x)
		}
	case json.Number:
		if phone {
			t.Fatalf("a phone shows as a number: %v", x)
		}
	}
}

func FuzzPath(f *testing.F) {
	f.Add(events.CallbackPath + id + "/tok3n")
	f.Add(events.CallbackPath + id)
	f.Add(events.CallbackPath + "x/y")
	f.Add("/x")
	shape := regexp.MustCompile(`^(|REDACTED|` + regexp.QuoteMeta(events.CallbackPath) + `[0-9a-f-]{36}(/REDACTED)?)$`)
	f.Fuzz(func(t *testing.T, p string) {
		got := mask.Path(p)
		if !shape.MatchString(got) {
			t.Fatalf("Path(%q) = %q", p, got)
		}
		if got != "" && got != "REDACTED" && !strings.HasPrefix(p, strings.TrimSuffix(got, "/REDACTED")) {
			t.Fatalf("Path(%q) = %q, not its prefix", p, got)
		}
	})
}
