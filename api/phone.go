package api

import (
	"strings"
	"unicode"
)

// NormalizePhone turns a Kenyan mobile number as clients write it into the
// form Daraja takes, 254 followed by nine digits, the first of them 7 or 1.
//
// Accepted: 07XXXXXXXX, 01XXXXXXXX, 7XXXXXXXX, 1XXXXXXXX, 2547XXXXXXXX,
// 2541XXXXXXXX and the same with a leading +; spaces and dashes anywhere
// are ignored. The operator is not checked: numbers are ported between
// operators, so Daraja decides.
func NormalizePhone(s string) (string, bool) {
	// Phones are short; anything much longer is not worth scanning.
	if len(s) > 64 {
		return "", false
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r == '-' || unicode.IsSpace(r) {
			continue
		}
		b.WriteRune(r)
	}
	d := b.String()
	if rest, ok := strings.CutPrefix(d, "+"); ok {
		// A + is only ever followed by the country code.
		if !strings.HasPrefix(rest, "254") {
			return "", false
		}
		d = rest
	}
	var sub string
	switch {
	case len(d) == 12 && strings.HasPrefix(d, "254"):
		sub = d[3:]
	case len(d) == 10 && d[0] == '0':
		sub = d[1:]
	case len(d) == 9:
		sub = d
	default:
		return "", false
	}
	if sub[0] != '7' && sub[0] != '1' {
		return "", false
	}
	for i := 0; i < len(sub); i++ {
		if sub[i] < '0' || sub[i] > '9' {
			return "", false
		}
	}
	return "254" + sub, true
}
