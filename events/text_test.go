package events

import (
	"testing"
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
