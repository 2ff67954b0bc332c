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
