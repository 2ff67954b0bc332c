package events

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxTextRunes is the longest description an event carries: Daraja's and
// Safaricom's texts are a sentence, and anything longer is cut.
const MaxTextRunes = 256

// CleanText makes text from outside (Daraja's error and result
// descriptions, a transport error) safe to carry in an event, store in
// Postgres and log: invalid UTF-8 becomes U+FFFD, NUL and other control
// characters are dropped (a tab or line break becomes a space), leading and
// trailing space is trimmed, and the result is cut to maxRunes runes (no cut
// when maxRunes <= 0). Postgres refuses NUL in text and jsonb and invalid
// UTF-8 anywhere, so an event with either could never be projected.
func CleanText(s string, maxRunes int) string {
	if isClean(s) && (maxRunes <= 0 || len(s) <= maxRunes) {
		return strings.TrimSpace(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	n := 0
	for _, r := range strings.TrimSpace(strings.ToValidUTF8(s, string(utf8.RuneError))) {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			r = ' '
		case unicode.IsControl(r):
			continue
		}
		if maxRunes > 0 && n == maxRunes {
			break
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// isClean reports whether s is valid UTF-8 without control characters.
func isClean(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
