// Package redact hides secrets in what the services log or put in an error:
// the credentials inside connection URLs, the values of secret settings and
// the phone numbers in a request's path.
// It works on the text and never needs the text to parse, so that a
// malformed setting (often a secret pasted into the wrong variable) is
// hidden as well as a well-formed one.
package redact

import (
	"regexp"
	"strings"
)

// Mask replaces what is hidden.
const Mask = "REDACTED"

// Secret shows whether a secret is set without showing it: "" when empty,
// else Mask.
func Secret(s string) string {
	if s == "" {
		return ""
	}
	return Mask
}

// URLs hides the credentials in a URL, a comma-separated list of URLs (as
// NATS_URL takes), or a Postgres key=value connection string:
//
//   - the user information of each URL (user:password@ or token@), as far
//     back as its scheme, or the start of the text if it has none
//     (user:pw@host:4222);
//   - password, pass, pwd, token and secret parameters of a query;
//   - the password of a key=value string (password=… or password='…').
//
// It may hide more than the secret (a user name, an @ in a query) but never
// less.
func URLs(s string) string {
	if s == "" {
		return ""
	}
	if kvStart.MatchString(s) {
		// key=value: a value may hold an @ or "://" of its own.
		return kvPassword.ReplaceAllString(s, "${1}"+Mask)
	}
	starts := urlStart.FindAllStringIndex(s, -1)
	// Each URL's user information runs from its "://" (or the start of
	// the text) to the last @ before the next URL of the list. A "://"
	// counts as a URL's only at the start of the text or of a list item, so
	// that one inside a password does not cut it short.
	var b strings.Builder
	from := 0 // the start of the current user information
	for _, m := range starts {
		b.WriteString(maskUser(s[from:m[0]]))
		b.WriteString(s[m[0]:m[1]])
		from = m[1]
	}
	b.WriteString(maskUser(s[from:]))
	return queryPassword.ReplaceAllString(b.String(), "${1}"+Mask)
}

// maskUser hides what comes before the last @ of a URL's remainder after
// its scheme: the user information.
func maskUser(rest string) string {
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		return Mask + rest[at:]
	}
	return rest
}

var (
	// urlStart is the scheme of a URL at the start of the text or of an
	// item of a comma-separated list.
	urlStart = regexp.MustCompile(`(?:^|,)\s*[A-Za-z][A-Za-z0-9+.\-]*://`)
	// kvStart is the start of a key=value connection string.
	kvStart = regexp.MustCompile(`^\s*[A-Za-z_][A-Za-z0-9_]*\s*=`)
	// kvPassword is a password setting in a key=value connection string: a
	// quoted value (with \' and \\ escapes) or a bare word.
	kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s']\S*)`)
	// queryPassword is a secret parameter of a URL's query.
	queryPassword = regexp.MustCompile(`(?i)([?&](?:password|pass|pwd|token|secret)=)[^&#\s,]*`)
)

// minPhoneDigits is the shortest run of digits Phones hides: a Kenyan
// number without its 0 or 254 (712345678) has nine.
const minPhoneDigits = 9

// Phones hides the phone numbers in a request's path, which the client
// wrote (a phone polled where a tracking id goes): every run of nine or
// more digits shows only its last three, as events.MaskPhone shows a
// phone (254712345678 is *********678, +254712345678 +*********678). A
// segment that is a UUID (a tracking id) is left whole, whatever digits
// it holds. A path with no such run is returned as it is, without a copy.
func Phones(path string) string {
	var b []byte
	segStart := 0
	for i := 0; i < len(path); {
		if path[i] == '/' {
			segStart = i + 1
			i++
			continue
		}
		if !isDigit(path[i]) {
			i++
			continue
		}
		j := i
		for j < len(path) && isDigit(path[j]) {
			j++
		}
		if j-i >= minPhoneDigits && !isUUID(segment(path, segStart)) {
			if b == nil {
				b = []byte(path)
			}
			for k := i; k < j-3; k++ {
				b[k] = '*'
			}
		}
		i = j
	}
	if b == nil {
		return path
	}
	return string(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// segment is the "/"-separated part of path that starts at start.
func segment(path string, start int) string {
	if end := strings.IndexByte(path[start:], '/'); end >= 0 {
		return path[start : start+end]
	}
	return path[start:]
}

// isUUID reports whether s is a UUID in its canonical text form
// (8-4-4-4-12 hexadecimal digits).
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		switch c := s[i]; {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}
