package api

// The database's tokens, cached: lookups bounded and shared, answers
// reused for a ttl, the tokens known valid kept apart from made-up ones.

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/stkgate/stkgate/api/store"
)

// How database tokens are cached: a disable, rotation or revoke takes
// effect on every api within DefaultTokenCacheTTL, or, while the lookup
// that would tell cannot be made in time (lookups saturated, the database
// slow or down), within DefaultTokenCacheTTL + DefaultTokenStaleFor.
const (
	// DefaultTokenCacheTTL is how long a lookup's answer, found or not, is
	// reused as it is, from when the lookup was asked for.
	DefaultTokenCacheTTL = 5 * time.Second
	// DefaultTokenStaleFor is how long past the ttl a token found valid
	// is still let in while the lookup that checks it again cannot answer
	// within staleWait: stale-while-revalidate, with a bounded age.
	DefaultTokenStaleFor = 10 * time.Second
	// staleWait is how long a request with a token past its ttl waits for
	// the lookup checking it again before it is let in on the cached
	// answer.
	staleWait = 100 * time.Millisecond
	// knownFor is how long a token found valid keeps its lookups apart
	// from those of tokens never seen, once its answer is stale.
	knownFor = time.Hour
	// tokenCacheMax bounds each of the two caches (tokens found, tokens
	// not found), so that a flood of made-up tokens cannot grow memory nor
	// push the good tokens out.
	tokenCacheMax = 10000
	// maxTokenLookups bounds the database lookups of tokens not known to
	// be valid in flight, so that a flood of made-up tokens takes at most
	// these connections of the pool; maxTokenWaiting more may wait for
	// one, and any more are refused at once (503).
	maxTokenLookups = 4
	maxTokenWaiting = 4
	// knownReload is how often the tokens that authenticate are listed
	// from the database and marked known (keepKnown).
	knownReload = time.Minute
	// maxKnownLookups are kept for the tokens found valid (their
	// checks again), which a flood of made-up tokens cannot take;
	// maxKnownWaiting more may wait for one.
	maxKnownLookups = 2
	maxKnownWaiting = 64
)

// errLookupsBusy is a token that would need a lookup while every lookup
// slot and waiting place is taken: it is refused at once rather than
// queued.
var errLookupsBusy = errors.New("look up token: too many lookups in flight")

// dbTokens authenticates the tokens of the clients kept in the database
// (stkgate-admin). Only well-formed tokens (store.WellFormedToken) are
// looked up, by their SHA-256 digest; answers are cached for ttl, and
// concurrent lookups of one token are made once.
//
// Lookups come in two kinds, each with its own slots: a token found valid
// within knownFor (or listed as valid by the database: loadKnown) is
// checked again in slots that no other token can take,
// and is let in on its cached answer for staleFor past the ttl when that
// check does not answer within staleWait; any other token waits for a slot
// only while few others do, and for no longer than its request, and is
// refused at once (503) beyond.
type dbTokens struct {
	lookup func(context.Context, store.TokenDigest) (store.TokenMatch, error)
	// active lists the digests of up to n tokens that authenticate now
	// (keepKnown); nil: none are loaded.
	active func(ctx context.Context, n int) ([]store.TokenDigest, error)
	// envClients are the API_TOKENS clients: a database client of the same
	// name would share their records, so its tokens are refused.
	envClients  map[string]bool
	log         *slog.Logger
	ttl         time.Duration // <= 0: no cache
	staleFor    time.Duration
	now         func() time.Time
	unknownPool *lookupPool
	knownPool   *lookupPool

	mu      sync.Mutex
	found   map[store.TokenDigest]foundToken
	gone    map[store.TokenDigest]time.Time // tokens not found, until when
	flights map[store.TokenDigest]*flight
}

type foundToken struct {
	client string
	// fresh is when the answer stops being reused as it is, stale when it
	// stops being reused at all (neither past the token's expiry), known
	// when the token's lookups stop being kept apart. A token only listed
	// by loadKnown has no answer to reuse: no client, fresh and stale zero.
	fresh, stale, known time.Time
}

// lookupPool bounds the lookups of one kind: slots in flight, and room for
// those and a few more waiting for a slot.
type lookupPool struct {
	slots chan struct{}
	room  chan struct{}
}

func newLookupPool(slots, waiting int) *lookupPool {
	return &lookupPool{slots: make(chan struct{}, slots), room: make(chan struct{}, slots+waiting)}
}

// enter takes a place in p without waiting, or reports there is none.
func (p *lookupPool) enter() bool {
	select {
	case p.room <- struct{}{}:
		return true
	default:
		return false
	}
}

func (p *lookupPool) leave() { <-p.room }

// flight is a lookup in progress, shared by the requests with its token.
type flight struct {
	done   chan struct{}
	client string
	err    error
	// waiters are the requests waiting on it (under dbTokens.mu); cancel,
	// nil for a token found valid (its answer refreshes the cache), stops
	// it when the last one leaves.
	waiters int
	cancel  context.CancelFunc
}

func newDBTokens(lookup func(context.Context, store.TokenDigest) (store.TokenMatch, error),
	env []ClientToken, log *slog.Logger, ttl, staleFor time.Duration) *dbTokens {
	d := &dbTokens{
		lookup:      lookup,
		envClients:  map[string]bool{},
		log:         log,
		ttl:         ttl,
		staleFor:    staleFor,
		now:         time.Now,
		unknownPool: newLookupPool(maxTokenLookups, maxTokenWaiting),
		knownPool:   newLookupPool(maxKnownLookups, maxKnownWaiting),
		found:       map[store.TokenDigest]foundToken{},
		gone:        map[store.TokenDigest]time.Time{},
		flights:     map[store.TokenDigest]*flight{},
	}
	for _, t := range env {
		d.envClients[t.Client] = true
	}
	return d
}

// known reports whether token was found valid within knownFor.
func (d *dbTokens) known(token string) bool {
	if d.ttl <= 0 || !store.WellFormedToken(token) {
		return false
	}
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	f, ok := d.found[store.DigestOf(token)]
	return ok && now.Before(f.known)
}

func (d *dbTokens) client(ctx context.Context, token string) (string, error) {
	if !store.WellFormedToken(token) {
		return "", nil
	}
	digest := store.DigestOf(token)
	now := d.now()

	d.mu.Lock()
	var stale, known bool
	var cached string
	if d.ttl > 0 {
		if f, ok := d.found[digest]; ok {
			if now.Before(f.fresh) {
				d.mu.Unlock()
				return f.client, nil
			}
			stale, known, cached = now.Before(f.stale), now.Before(f.known), f.client
		} else if until, ok := d.gone[digest]; ok && now.Before(until) {
			d.mu.Unlock()
			return "", nil
		}
	}
	// A request whose client is gone waits for nothing, unless its token
	// was found valid: such a request goes on as if it had stayed (it may
	// publish), as a request with an API_TOKENS token does.
	var gone <-chan struct{}
	if !known {
		if err := ctx.Err(); err != nil {
			d.mu.Unlock()
			return "", fmt.Errorf("look up token: %w", err)
		}
		gone = ctx.Done()
	}
	f := d.join(digest, store.TokenID(token), known, now)
	d.mu.Unlock()

	if f == nil {
		if stale {
			return cached, nil
		}
		return "", errLookupsBusy
	}
	var late <-chan time.Time
	if stale {
		t := time.NewTimer(staleWait)
		defer t.Stop()
		late = t.C
	}
	select {
	case <-f.done:
		if f.err != nil && stale {
			d.log.Warn("token let in on its cached answer: it cannot be checked again", "error", f.err)
			return cached, nil
		}
		return f.client, f.err
	case <-late:
		d.leave(digest, f)
		return cached, nil
	case <-gone:
		d.leave(digest, f)
		return "", fmt.Errorf("look up token: %w", ctx.Err())
	}
}

// join returns the lookup of digest in flight, or starts one, asked for
// at now, if its pool has room; nil when it has none. Called with d.mu held.
func (d *dbTokens) join(digest store.TokenDigest, tokenID string, known bool, now time.Time) *flight {
	if f := d.flights[digest]; f != nil {
		f.waiters++
		return f
	}
	pool := d.unknownPool
	if known {
		pool = d.knownPool
	}
	if !pool.enter() {
		return nil
	}
	// Not the first request's context: others may join it.
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	f := &flight{done: make(chan struct{}), waiters: 1}
	if !known {
		f.cancel = cancel
	}
	d.flights[digest] = f
	go func() {
		defer cancel()
		defer pool.leave()
		client, err := d.fetch(ctx, pool, digest, tokenID, now)
		d.mu.Lock()
		if d.flights[digest] == f {
			delete(d.flights, digest)
		}
		d.mu.Unlock()
		f.client, f.err = client, err
		close(f.done)
	}()
	return f
}

// leave is a request no longer waiting on f: the last one to leave a
// lookup of a token not known valid stops its wait for a slot.
func (d *dbTokens) leave(digest store.TokenDigest, f *flight) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f.waiters--
	if f.waiters == 0 && f.cancel != nil {
		f.cancel()
		if d.flights[digest] == f {
			delete(d.flights, digest)
		}
	}
}

// fetch waits for a slot of pool, looks digest up and caches the answer as
// of asked, when the lookup was asked for.
func (d *dbTokens) fetch(ctx context.Context, pool *lookupPool, digest store.TokenDigest, tokenID string, asked time.Time) (string, error) {
	select {
	case pool.slots <- struct{}{}:
		defer func() { <-pool.slots }()
	case <-ctx.Done():
		return "", fmt.Errorf("look up token: waiting for a lookup slot: %w", ctx.Err())
	}
	// A lookup under way is let finish, its answer cached, even when no
	// request waits for it any more: cancelling a query costs Postgres a
	// connection of its own (lib/pq's cancel request), which a client
	// hanging up must not be able to cause at will.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
	defer cancel()
	// The answer tells how the token stood at some moment of the lookup,
	// perhaps its very start: the cache's clocks start when it was asked
	// for (a little earlier still, by any wait for a slot), or a slow
	// lookup would stretch how long a revoke takes, and a token's expiry.
	m, err := d.lookup(ctx, digest)
	switch {
	case errors.Is(err, store.ErrTokenNotFound):
		d.remember(digest, "", 0, asked)
		return "", nil
	case err != nil:
		return "", err
	}
	// The database found it by digest; compare again, in constant time.
	if subtle.ConstantTimeCompare(m.Digest[:], digest[:]) != 1 {
		d.remember(digest, "", 0, asked)
		return "", nil
	}
	if d.envClients[m.Client] {
		d.log.Error("token refused: its client is in the database and in API_TOKENS; rename one of them",
			"client", m.Client, "token_id", tokenID)
		d.remember(digest, "", 0, asked)
		return "", nil
	}
	d.remember(digest, m.Client, m.ExpiresIn, asked)
	return m.Client, nil
}

// remember caches the answer for digest ("" for not found), given by a
// lookup started at now, for the ttl, or until the token expires if that
// is sooner.
func (d *dbTokens) remember(digest store.TokenDigest, client string, expiresIn time.Duration, now time.Time) {
	if d.ttl <= 0 {
		return
	}
	capped := func(t time.Time) time.Time {
		if expiresIn > 0 && now.Add(expiresIn).Before(t) {
			return now.Add(expiresIn)
		}
		return t
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if client == "" {
		delete(d.found, digest)
		makeRoom(d.gone, tokenCacheMax, now, func(t time.Time) time.Time { return t })
		d.gone[digest] = capped(now.Add(d.ttl))
		return
	}
	delete(d.gone, digest)
	makeRoom(d.found, tokenCacheMax, now, func(f foundToken) time.Time { return f.known })
	d.found[digest] = foundToken{
		client: client,
		fresh:  capped(now.Add(d.ttl)),
		stale:  capped(now.Add(d.ttl + d.staleFor)),
		known:  now.Add(knownFor),
	}
}

// keepKnown marks the tokens that authenticate as known (loadKnown) now
// and every knownReload until ctx ends. Run runs it.
func (d *dbTokens) keepKnown(ctx context.Context) {
	t := time.NewTicker(knownReload)
	defer t.Stop()
	for {
		lctx, cancel := context.WithTimeout(ctx, readTimeout)
		err := d.loadKnown(lctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			d.log.Warn("tokens that authenticate not loaded: a token never looked up is held back with its address's failures until the next load",
				"error", err, "next_in", knownReload)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// loadKnown marks the tokens the database lists as authenticating now as
// known for knownFor: their lookups are kept apart, and their source's
// failed authentications never hold them back.
//
// A neighbour behind the same address (a NAT, an IPv6 /64) can always
// drain that address's failures, and a token needing a lookup cannot be
// told from junk before it: letting an address with none left look tokens
// up anyway, in any bounded way, gives that bound to the neighbour too,
// while an unbounded way would undo the limit a flood of junk tokens from
// one address is held to. The database's list tells the valid tokens
// apart without a lookup per request, so the limit on junk stays whole.
// It marks a token known, never valid: a token listed is still looked up
// (in the known slots) before it is let in, so a revoke since the list
// was made takes effect as for any token found valid. Only a token
// created since the last load is still held back with its address.
func (d *dbTokens) loadKnown(ctx context.Context) error {
	if d.ttl <= 0 || d.active == nil {
		return nil // without a cache nothing is known: every token is looked up
	}
	asked := d.now()
	digests, err := d.active(ctx, tokenCacheMax)
	if err != nil {
		return fmt.Errorf("load the tokens that authenticate: %w", err)
	}
	known := asked.Add(knownFor)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, digest := range digests {
		f, ok := d.found[digest]
		if !ok {
			makeRoom(d.found, tokenCacheMax, asked, func(f foundToken) time.Time { return f.known })
		}
		if known.After(f.known) {
			f.known = known
		}
		d.found[digest] = f
	}
	return nil
}

// makeRoom makes room for one more entry in a map holding up to size: it
// drops the entries past until and, if that is not enough, a tenth of the
// rest (at random: map order), so that a full map is swept once per size/10
// additions rather than on each.
func makeRoom[K comparable, V any](m map[K]V, size int, now time.Time, until func(V) time.Time) {
	if len(m) < size {
		return
	}
	for k, v := range m {
		if !now.Before(until(v)) {
			delete(m, k)
		}
	}
	for k := range m {
		if len(m) < size*9/10 {
			break
		}
		delete(m, k)
	}
}
