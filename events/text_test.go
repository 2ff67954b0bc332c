package events

import (
	"testing"
	"unicode/utf8"
)

func TestCleanText(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		max      int
		want     string
	}{
		{"clean", "The service request is processed successfully.", 0, "The service request is processed successfully."},
		{"nul", "Request cancelled\x00 by user", 0, "Request cancelled by user"},
		{"controls", "a\x01b\x1bc\u0085d", 0, "abcd"},
		{"breaks", "line one\r\nline\ttwo", 0, "line one  line two"},
		{"invalid utf-8", "bad \xff\xfe text", 0, "bad \uFFFD text"},
		{"trimmed", "  spaced \n", 0, "spaced"},
		{"cut", "abcdefgh", 3, "abc"},
		{"cut after trimming", "   abcdef", 3, "abc"},
		{"cut counts runes", "ñññññ", 2, "ññ"},
		{"no cut when short", "abc", 10, "abc"},
		{"empty", "", 5, ""},
		{"only nul", "\x00\x00", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := CleanText(tc.in, tc.max); got != tc.want {
				t.Errorf("CleanText(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}

func FuzzCleanText(f *testing.F) {
	for _, s := range []string{"", "ok", "a\x00b", "\xff", "ñ\u0085\t"} {
		f.Add(s, 4)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		got := CleanText(s, max)
		if !utf8.ValidString(got) {
			t.Fatalf("CleanText(%q) = %q: not valid UTF-8", s, got)
		}
		if !isClean(got) {
			t.Fatalf("CleanText(%q) = %q keeps a control character", s, got)
		}
		if max > 0 && utf8.RuneCountInString(got) > max {
			t.Fatalf("CleanText(%q, %d) = %q: longer than the limit", s, max, got)
		}
		if again := CleanText(got, max); again != got {
			t.Fatalf("CleanText is not idempotent: %q then %q", got, again)
		}
	})
}
