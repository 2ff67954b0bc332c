// Package redact hides secrets in what the services log or put in an error:
// the credentials inside connection URLs and the values of secret settings.
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
	if !strings.Contains(s, "://") && kvPassword.MatchString(s) {
		return kvPassword.ReplaceAllString(s, "${1}"+Mask)
	}
	// Each URL's user information runs from its "://" (or the start) to
	// the last @ before the next "://".
	var b strings.Builder
	rest := s
	for rest != "" {
		start := 0
		if i := strings.Index(rest, "://"); i >= 0 {
			start = i + len("://")
		}
		end := len(rest)
		if i := strings.Index(rest[start:], "://"); i >= 0 {
			end = start + i
		}
		b.WriteString(rest[:start])
		seg := rest[start:end]
		if at := strings.LastIndexByte(seg, '@'); at >= 0 {
			seg = Mask + seg[at:]
		}
		b.WriteString(seg)
		rest = rest[end:]
	}
	return queryPassword.ReplaceAllString(b.String(), "${1}"+Mask)
}

var (
	// kvPassword is a password setting in a key=value connection string: a
	// quoted value (with \' and \\ escapes) or a bare word.
	kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s']\S*)`)
	// queryPassword is a secret parameter of a URL's query.
	queryPassword = regexp.MustCompile(`(?i)([?&](?:password|pass|pwd|token|secret)=)[^&#\s,]*`)
)
