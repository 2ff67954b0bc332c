package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/sync/singleflight"

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
// database of clients did not answer.
const MsgAuthUnavailable = "The token cannot be checked right now. Please retry."

// How database tokens are cached: a disable, rotation or revoke takes
// effect on every api within DefaultTokenCacheTTL.
const (
	// DefaultTokenCacheTTL is how long a lookup's answer, found or not, is
	// reused.
	DefaultTokenCacheTTL = 5 * time.Second
	// tokenCacheMax bounds each of the two caches (tokens found, tokens
	// not found), so that a flood of made-up tokens cannot grow memory nor
	// push the good tokens out.
	tokenCacheMax = 10000
	// maxTokenLookups bounds the database lookups in flight, so that a
	// flood of made-up tokens takes at most these connections of the pool.
	maxTokenLookups = 4
)

// authenticator finds the client of a token: first among the API_TOKENS
// ones, then among the database's.
type authenticator struct {
	env *tokenSet
	db  *dbTokens
}

// client returns the client of token, "" for a token that does not
// authenticate, or an error when the database could not tell.
func (a *authenticator) client(ctx context.Context, token string) (string, error) {
	if c := a.env.client(token); c != "" {
		return c, nil
	}
	return a.db.client(ctx, token)
}

// dbTokens authenticates the tokens of the clients kept in the database
// (stkgate-admin). Only well-formed tokens (store.WellFormedToken) are
// looked up, by their SHA-256 digest; answers are cached for ttl, and
// concurrent lookups of one token are made once.
type dbTokens struct {
	lookup func(context.Context, store.TokenDigest) (store.TokenMatch, error)
	// envClients are the API_TOKENS clients: a database client of the same
	// name would share their records, so its tokens are refused.
	envClients map[string]bool
	log        *slog.Logger
	ttl        time.Duration // <= 0: no cache
	now        func() time.Time
	slots      chan struct{}
	group      singleflight.Group

	mu    sync.Mutex
	found map[store.TokenDigest]foundToken
	gone  map[store.TokenDigest]time.Time // tokens not found, until when
}

type foundToken struct {
	client string
	until  time.Time
}

func newDBTokens(lookup func(context.Context, store.TokenDigest) (store.TokenMatch, error),
	env []ClientToken, log *slog.Logger, ttl time.Duration) *dbTokens {
	d := &dbTokens{
		lookup:     lookup,
		envClients: map[string]bool{},
		log:        log,
		ttl:        ttl,
		now:        time.Now,
		slots:      make(chan struct{}, maxTokenLookups),
		found:      map[store.TokenDigest]foundToken{},
		gone:       map[store.TokenDigest]time.Time{},
	}
	for _, t := range env {
		d.envClients[t.Client] = true
	}
	return d
}

func (d *dbTokens) client(ctx context.Context, token string) (string, error) {
	if !store.WellFormedToken(token) {
		return "", nil
	}
	digest := store.DigestOf(token)
	if c, ok := d.cached(digest); ok {
		return c, nil
	}
	v, err, _ := d.group.Do(string(digest[:]), func() (any, error) {
		// Not the first caller's context: the others wait on this lookup.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
		defer cancel()
		return d.fetch(ctx, digest, store.TokenID(token))
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// fetch looks digest up and caches the answer.
func (d *dbTokens) fetch(ctx context.Context, digest store.TokenDigest, tokenID string) (string, error) {
	select {
	case d.slots <- struct{}{}:
		defer func() { <-d.slots }()
	case <-ctx.Done():
		return "", fmt.Errorf("look up token: waiting for a lookup slot: %w", ctx.Err())
	}
	m, err := d.lookup(ctx, digest)
	switch {
	case errors.Is(err, store.ErrTokenNotFound):
		d.remember(digest, "", 0)
		return "", nil
	case err != nil:
		return "", err
	}
	// The database found it by digest; compare again, in constant time.
	if subtle.ConstantTimeCompare(m.Digest[:], digest[:]) != 1 {
		d.remember(digest, "", 0)
		return "", nil
	}
	if d.envClients[m.Client] {
		d.log.Error("token refused: its client is in the database and in API_TOKENS; rename one of them",
			"client", m.Client, "token_id", tokenID)
		d.remember(digest, "", 0)
		return "", nil
	}
	d.remember(digest, m.Client, m.ExpiresIn)
	return m.Client, nil
}

// cached is the cached answer for digest, if there is one still fresh.
func (d *dbTokens) cached(digest store.TokenDigest) (client string, ok bool) {
	if d.ttl <= 0 {
		return "", false
	}
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if f, ok := d.found[digest]; ok && now.Before(f.until) {
		return f.client, true
	}
	if until, ok := d.gone[digest]; ok && now.Before(until) {
		return "", true
	}
	return "", false
}

// remember caches the answer for digest ("" for not found) for the ttl,
// or until the token expires if that is sooner.
func (d *dbTokens) remember(digest store.TokenDigest, client string, expiresIn time.Duration) {
	if d.ttl <= 0 {
		return
	}
	now := d.now()
	until := now.Add(d.ttl)
	if expiresIn > 0 && expiresIn < d.ttl {
		until = now.Add(expiresIn)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if client == "" {
		delete(d.found, digest)
		makeRoom(d.gone, now, func(t time.Time) time.Time { return t })
		d.gone[digest] = until
		return
	}
	delete(d.gone, digest)
	makeRoom(d.found, now, func(f foundToken) time.Time { return f.until })
	d.found[digest] = foundToken{client: client, until: until}
}

// makeRoom makes room for one more entry in a full cache: it drops the
// stale entries and, if that is not enough, a tenth of the rest (at random:
// map order), so that a full cache is swept once per tokenCacheMax/10
// additions rather than on each.
func makeRoom[V any](m map[store.TokenDigest]V, now time.Time, until func(V) time.Time) {
	if len(m) < tokenCacheMax {
		return
	}
	for k, v := range m {
		if !now.Before(until(v)) {
			delete(m, k)
		}
	}
	for k := range m {
		if len(m) < tokenCacheMax*9/10 {
			break
		}
		delete(m, k)
	}
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
