// Package mask hides what stkgate-admin must never print from the messages
// it shows: phone numbers (masked as the logs mask them, events.MaskPhone)
// and callback tokens. Its input is whatever was kept, callbacks from the
// internet among it, so nothing here trusts its shape.
package mask

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/redact"
)

// phoneKey is a JSON key that holds a phone number: phone, phone_number,
// PhoneNumber, MSISDN…
var phoneKey = regexp.MustCompile(`(?i)phone|msisdn`)

// maxDepth bounds the nesting JSON walks: encoding/json itself stops at
// 10000, which is recursion enough to matter.
const maxDepth = 64

// JSON is body with every phone number masked: the value of a key named
// like a phone, and the Value of a Daraja callback item whose Name is. A
// body that is not one JSON value, or nests deeper than 64, is not shown:
// it may hold anything; nil says so.
func JSON(body []byte) json.RawMessage {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&v); err != nil || d.More() {
		return nil
	}
	v, ok := value(v, 0)
	if !ok {
		return nil
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return out
}

func value(v any, depth int) (any, bool) {
	if depth > maxDepth {
		return nil, false
	}
	switch x := v.(type) {
	case map[string]any:
		if name, ok := x["Name"].(string); ok && phoneKey.MatchString(name) {
			if val, ok := x["Value"]; ok {
				x["Value"] = scalar(val)
			}
		}
		for k, val := range x {
			if phoneKey.MatchString(k) {
				x[k] = scalar(val)
				continue
			}
			var ok bool
			if x[k], ok = value(val, depth+1); !ok {
				return nil, false
			}
		}
	case []any:
		for i := range x {
			var ok bool
			if x[i], ok = value(x[i], depth+1); !ok {
				return nil, false
			}
		}
	case string:
		return Digits(x), true
	}
	return v, true
}

// scalar is a phone's value masked: a string or number as the logs mask a
// phone, null kept, anything else hidden whole.
func scalar(v any) any {
	switch x := v.(type) {
	case string:
		return events.MaskPhone(x)
	case json.Number:
		return events.MaskPhone(x.String())
	case nil:
		return nil
	}
	return redact.Mask
}

// digits is a run of digits.
var digits = regexp.MustCompile(`[0-9]+`)

// PhoneLike is whether a whole run of digits has the shape of a Kenyan
// mobile number: 7XXXXXXXX or 1XXXXXXXX, after 0 or 254.
func PhoneLike(run string) bool {
	switch {
	case len(run) == 12 && (strings.HasPrefix(run, "2547") || strings.HasPrefix(run, "2541")):
		return true
	case len(run) == 10 && (strings.HasPrefix(run, "07") || strings.HasPrefix(run, "01")):
		return true
	case len(run) == 9 && (run[0] == '7' || run[0] == '1'):
		return true
	}
	return false
}

// Digits is s with every run of digits shaped like a phone number
// (PhoneLike) masked as the logs mask a phone: a free text (a callback's
// detail, a description) may quote one. Longer runs, such as those of
// Daraja's CheckoutRequestIDs, are left alone.
func Digits(s string) string {
	return digits.ReplaceAllStringFunc(s, func(run string) string {
		if PhoneLike(run) {
			return events.MaskPhone(run)
		}
		return run
	})
}

// Path is a callback's request path with its callback token hidden:
// "/hooks/stk-push/<id>/REDACTED" (the query too). A path that does not
// name a tracking id under the callback path is hidden whole: a token may
// be anywhere in it.
func Path(p string) string {
	if p == "" {
		return ""
	}
	rest, ok := strings.CutPrefix(p, events.CallbackPath)
	if !ok {
		return redact.Mask
	}
	id, _, _ := strings.Cut(rest, "/")
	id, _, _ = strings.Cut(id, "?")
	u, err := uuid.Parse(id)
	if err != nil || u.String() != id {
		return redact.Mask
	}
	if len(id) < len(rest) {
		return events.CallbackPath + id + "/" + redact.Mask
	}
	return events.CallbackPath + id
}

// callbackPaths finds callback paths in a text: the callback path and what
// follows it up to white space or a quote.
var callbackPaths = regexp.MustCompile(regexp.QuoteMeta(events.CallbackPath) + "[^\\s\"'<>]*")

// Text is a free text (a header, a description) with its phone numbers
// masked (Digits) and every callback path in it shown as Path shows it.
func Text(s string) string {
	return Digits(callbackPaths.ReplaceAllStringFunc(s, Path))
}
