package idemkey

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzIdempotencyKey: exactly the 1–255 printable ASCII keys are taken,
// unchanged.
func FuzzIdempotencyKey(f *testing.F) {
	for _, s := range []string{"", "k", "order-42", strings.Repeat("x", 255), strings.Repeat("x", 256), "clé", "a\tb", "a\x00b", " ", "~\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h := http.Header{}
		h[Header] = []string{s}
		k, ok := Of(h)
		valid := len(s) >= 1 && len(s) <= MaxLen && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e })
		if valid != ok {
			t.Fatalf("%q: valid %v, taken %v", s, valid, ok)
		}
		if ok && k != s {
			t.Fatalf("%q: key %q", s, k)
		}
	})
}
