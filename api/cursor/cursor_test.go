package cursor

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	at    = time.Date(2024, 3, 21, 11, 30, 1, 123456000, time.UTC)
	scope = Scope("acme", "reference=INV-1")
)

// A cursor reads back as the position it was made of, only under the scope
// it was made for; anything else is ErrInvalid.
func TestCursor(t *testing.T) {
	t.Parallel()
	c := Encode(Position{At: at, ID: 42}, scope)
	p, err := Decode(c, scope)
	if err != nil || !p.At.Equal(at) || p.ID != 42 || p.At.Location() != time.UTC {
		t.Fatalf("Decode(Encode) = %v, %v", p, err)
	}
	if strings.ContainsAny(c, "+/=") {
		t.Errorf("cursor %q is not unpadded base64url", c)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(c)
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	for name, tc := range map[string]struct {
		cursor string
		scope  []byte
	}{
		"empty":                 {"", scope},
		"another client's":      {c, Scope("globex", "reference=INV-1")},
		"another query's":       {c, Scope("acme", "reference=INV-2")},
		"padded":                {c + "=", scope},
		"standard base64":       {base64.StdEncoding.EncodeToString(raw), scope},
		"cut short":             {c[:len(c)-1], scope},
		"one more character":    {c + "A", scope},
		"not base64":            {strings.Repeat("!", len(c)), scope},
		"time changed":          {flip(3), scope},
		"id changed":            {flip(12), scope},
		"check changed":         {flip(len(raw) - 1), scope},
		"version changed":       {flip(0), scope},
		"huge":                  {strings.Repeat("A", 10000), scope},
		"non-canonical padding": {c[:len(c)-1] + string(nextChar(c[len(c)-1])), scope},
	} {
		t.Run(name, func(t *testing.T) {
			if p, err := Decode(tc.cursor, tc.scope); !errors.Is(err, ErrInvalid) {
				t.Errorf("Decode(%q) = %v, %v; want ErrInvalid", tc.cursor, p, err)
			}
		})
	}
	// A position no record has (id 0, a time Postgres cannot hold) is
	// refused when made, as when read.
	for _, p := range []Position{{At: at, ID: 0}, {At: at, ID: -1}, {At: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), ID: 1}} {
		if _, err := Decode(Encode(p, scope), scope); !errors.Is(err, ErrInvalid) {
			t.Errorf("position %v: %v, want ErrInvalid", p, err)
		}
	}
}

// nextChar is a base64url character other than c with the same top bits,
// for a last character whose unused bits are not zero.
func nextChar(c byte) byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return alphabet[i^1]
}

// FuzzDecode: Decode never panics; what it takes is a valid position that
// encodes back to exactly the same cursor (one cursor per position), and
// under no other scope.
func FuzzDecode(f *testing.F) {
	f.Add(Encode(Position{At: at, ID: 42}, scope))
	f.Add(Encode(Position{At: time.Unix(0, 0), ID: 1}, scope))
	f.Add(Encode(Position{At: at, ID: 1<<63 - 1}, scope))
	for _, s := range []string{"", "=", "AAAA", "not a cursor", strings.Repeat("A", Len), strings.Repeat("_", Len), "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Decode(s, scope)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode(%q): %v is not ErrInvalid", s, err)
			}
			return
		}
		if p.ID < 1 || p.At.Year() < 1 || p.At.Year() > 9999 || p.At.Location() != time.UTC {
			t.Fatalf("Decode(%q) took %v", s, p)
		}
		if again := Encode(p, scope); again != s {
			t.Fatalf("Decode(%q) = %v, which encodes as %q", s, p, again)
		}
		if _, err := Decode(s, Scope("other", "")); err == nil {
			t.Fatalf("Decode(%q) took it under another scope", s)
		}
	})
}
