package api

import (
	"crypto/sha256"
	"crypto/subtle"
)

// TokenHeader carries a client's token on every /api request.
const TokenHeader = "X-API-Token"

// tokenSet finds the client a token belongs to without telling an attacker,
// by timing, how close a guess came: it compares SHA-256 digests (so the
// tokens' lengths do not show) in constant time, against every token.
type tokenSet struct {
	digests [][sha256.Size]byte
	clients []string
}

func newTokenSet(tokens []ClientToken) *tokenSet {
	ts := &tokenSet{}
	for _, t := range tokens {
		ts.digests = append(ts.digests, sha256.Sum256([]byte(t.Token)))
		ts.clients = append(ts.clients, t.Client)
	}
	return ts
}

// client returns the client of token, or "" for an unknown one.
func (ts *tokenSet) client(token string) string {
	if token == "" {
		return ""
	}
	d := sha256.Sum256([]byte(token))
	match := -1
	for i := range ts.digests {
		// No early exit: the time taken does not depend on which token,
		// if any, matched. Tokens are unique, so at most one does.
		eq := subtle.ConstantTimeCompare(d[:], ts.digests[i][:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return ""
	}
	return ts.clients[match]
}
