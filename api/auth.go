package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/stkgate/stkgate/api/store"
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

// MsgAuthUnavailable answers a token that could not be checked: the
// database of clients did not answer, or too many lookups are in flight.
const MsgAuthUnavailable = "The token cannot be checked right now. Please retry."

// authenticator finds the client of a token: first among the API_TOKENS
// ones, then among the database's. failures, when not nil, limits the
// failed authentications per source address.
type authenticator struct {
	env      *tokenSet
	db       *dbTokens
	failures *sourceLimits
}

// client returns the client of token, "" for a token that does not
// authenticate, a *limitedError when source failed too often to be
// looked up again, or an error when the database could not tell.
// A token known (found valid recently, or listed: loadKnown) is never held
// back by its source's failures.
func (a *authenticator) client(ctx context.Context, token string, source netip.Addr) (string, error) {
	if c := a.env.client(token); c != "" {
		return c, nil
	}
	if a.failures == nil || a.db.known(token) {
		return a.db.client(ctx, token)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("authenticate: %w", err) // its client is gone: nothing to count
	}
	now := time.Now()
	r, wait := a.failures.reserve(source, now)
	if r == nil {
		return "", &limitedError{message: MsgAuthFailuresLimited, retryAfter: retrySeconds(wait)}
	}
	c, err := a.db.client(ctx, token)
	if c != "" || (err != nil && !errors.Is(err, errLookupsBusy) && ctx.Err() == nil) {
		// Authenticated, or the database failed: no fault of the source.
		// A client that hung up (or ran out of time) failed, though: its
		// lookup may still be under way, and hanging up at once must not
		// be a way to start lookups without limit. Nor is a token refused
		// because lookups are saturated given back: the flood may be its
		// source's own.
		r.CancelAt(now)
	}
	return c, err
}

// checkClientNames refuses API_TOKENS clients that are also clients in the
// database: the two would share one another's records. (A database client
// created later under such a name is refused at each lookup instead.)
func checkClientNames(ctx context.Context, s *store.Store, env []ClientToken) error {
	var names []string
	for _, t := range env {
		names = append(names, t.Client)
	}
	if len(names) == 0 {
		return nil
	}
	clash, err := s.ClientsNamed(ctx, names)
	if err != nil {
		return err
	}
	if len(clash) > 0 {
		return backoff.Permanent(fmt.Errorf("API_TOKENS: client %s is also a client in the database (stkgate-admin); "+
			"give it another name in API_TOKENS, or the two would share their records", strings.Join(clash, ", ")))
	}
	return nil
}

// ValidClientName reports whether name may name a client: 1 to 64
// letters, digits, '.', '_' or '-', starting with a letter or digit.
func ValidClientName(name string) bool { return clientName.MatchString(name) }
