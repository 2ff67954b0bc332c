package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/logtest"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/servertest"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// dbClient creates the database client name and returns its token.
func dbClient(t testing.TB, s *store.Store, name string) string {
	t.Helper()
	tok, err := store.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateClient(context.Background(), name, store.DigestOf(tok), store.TokenID(tok)); err != nil {
		t.Fatal(err)
	}
	return tok
}

// rotate gives name a new token, the others expiring after grace.
func rotate(t testing.TB, s *store.Store, name string, grace time.Duration) string {
	t.Helper()
	tok, err := store.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RotateToken(context.Background(), name, store.DigestOf(tok), store.TokenID(tok), grace); err != nil {
		t.Fatal(err)
	}
	return tok
}

var unauthenticated = map[string]any{"success": false, "message": MsgUnauthenticated}

// wantStatus checks the status of r and, for a 401 or 404, that its body
// is the one every such answer has, whatever the reason.
func wantStatus(t testing.TB, what string, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Errorf("%s: status %d, want %d: %s", what, r.status, want, r.raw)
		return
	}
	var body map[string]any
	switch want {
	case http.StatusUnauthorized:
		body = unauthenticated
	case http.StatusNotFound:
		body = map[string]any{"success": false, "message": MsgNotFound}
	default:
		return
	}
	if diff := cmp.Diff(body, r.body); diff != "" {
		t.Errorf("%s: body (-want +got):\n%s", what, diff)
	}
}

// Clients in the database see and affect only their own records, as
// API_TOKENS clients do: another client's id is a 404, an Idempotency-Key
// is the client's own.
func TestDBClientsAreSeparate(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.TokenCacheTTL = -1 })
	shop, mall := dbClient(t, e.store, "shop"), dbClient(t, e.store, "mall")

	// A pending request, read from the stream, and a projected one.
	pending := accepted(t, e.post(t, shop, validBody))
	if _, req, _ := e.requested(t, pending); req.Client != "shop" {
		t.Fatalf("stk.requested carries client %q, want shop", req.Client)
	}
	projected := uuid.Must(uuid.NewV7()).String()
	e.apply(t, events.Requested{Payment: payment(projected, "shop")})
	acmes := uuid.Must(uuid.NewV7()).String()
	e.apply(t, events.Requested{Payment: payment(acmes, "acme")})

	for _, tc := range []struct {
		name, token, id string
		want            int
	}{
		{"own pending", shop, pending, http.StatusOK},
		{"own projected", shop, projected, http.StatusOK},
		{"db client reads db client's pending", mall, pending, http.StatusNotFound},
		{"db client reads db client's projected", mall, projected, http.StatusNotFound},
		{"env client reads db client's pending", acmeToken, pending, http.StatusNotFound},
		{"env client reads db client's projected", acmeToken, projected, http.StatusNotFound},
		{"db client reads env client's", shop, acmes, http.StatusNotFound},
		{"env client's own", acmeToken, acmes, http.StatusOK},
	} {
		wantStatus(t, tc.name, e.get(t, tc.token, tc.id), tc.want)
	}

	// One key, two clients: two requests; and another body under a key the
	// other client used is no mismatch.
	s1 := accepted(t, e.postKey(t, shop, "order-1", validBody))
	m1 := accepted(t, e.postKey(t, mall, "order-1", validBody))
	if s1 == m1 {
		t.Fatal("two clients' requests with one key got one tracking id")
	}
	accepted(t, e.postKey(t, mall, "order-2", `{"phone":"0712345678","amount":99,"reference":"X"}`))
	accepted(t, e.postKey(t, shop, "order-2", validBody))
	if got := accepted(t, e.postKey(t, shop, "order-1", validBody)); got != s1 {
		t.Errorf("shop's repeat: %s, want %s", got, s1)
	}
	if _, req, _ := e.requested(t, m1); req.Client != "mall" {
		t.Errorf("mall's request carries client %q", req.Client)
	}
}

// A token that does not authenticate gets the answer an unknown token gets,
// whatever the reason; rotated tokens both work during the grace.
func TestDBClientTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newTestEnv(t, func(o *Options) { o.TokenCacheTTL = -1 })
	ok := func(what, token string) {
		t.Helper()
		wantStatus(t, what, e.post(t, token, validBody), http.StatusAccepted)
	}
	refused := func(what, token string) {
		t.Helper()
		wantStatus(t, what, e.post(t, token, validBody), http.StatusUnauthorized)
		wantStatus(t, what+" (GET)", e.get(t, token, uuid.Must(uuid.NewV7()).String()), http.StatusUnauthorized)
	}

	old := dbClient(t, e.store, "shop")
	ok("new client", old)
	unknown, _ := store.NewToken()
	refused("unknown well-formed token", unknown)
	refused("a token's id", store.TokenID(old))
	refused("token cut short", old[:len(old)-1])
	refused("token with a byte changed", old[:len(old)-1]+string(old[len(old)-1]^1))

	// Disabled, then enabled again.
	if _, err := e.store.SetClientDisabled(ctx, "shop", true); err != nil {
		t.Fatal(err)
	}
	refused("disabled client", old)
	if _, err := e.store.SetClientDisabled(ctx, "shop", false); err != nil {
		t.Fatal(err)
	}
	ok("enabled again", old)

	// Rotation: both tokens during the grace; the old one revoked.
	cur := rotate(t, e.store, "shop", time.Hour)
	ok("old token during the grace", old)
	ok("new token", cur)
	if _, err := e.store.RevokeToken(ctx, store.TokenID(old)); err != nil {
		t.Fatal(err)
	}
	refused("old token revoked", old)
	ok("new token after the old one's revoke", cur)

	// Rotation with a short grace: the old one expires by itself.
	const grace = time.Second
	rotated := time.Now()
	next := rotate(t, e.store, "shop", grace)
	expiresBy := time.Now().Add(grace) // Postgres's now() is before this
	// A loaded machine may take the whole grace to get here: only a request
	// known to be within it must be accepted.
	if r := e.post(t, cur, validBody); time.Since(rotated) < grace {
		wantStatus(t, "old token within a short grace", r, http.StatusAccepted)
	}
	time.Sleep(time.Until(expiresBy.Add(50 * time.Millisecond)))
	refused("old token past its grace", cur)
	ok("newest token", next)

	// Every token of the client revoked.
	if _, err := e.store.RevokeClientTokens(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	refused("all revoked", next)
	ok("an env client meanwhile", acmeToken)

	if logs := e.logs.String(); strings.Contains(logs, old) || strings.Contains(logs, cur) || strings.Contains(logs, next) {
		t.Errorf("logs reveal a token:\n%s", logs)
	}
}

// A database client named as an API_TOKENS client would share its records:
// its tokens are refused, and the operator told why.
func TestDBClientNamedAsEnvClient(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.TokenCacheTTL = -1 })
	tok := dbClient(t, e.store, "acme")
	acmes := accepted(t, e.post(t, acmeToken, validBody))
	wantStatus(t, "db acme posts", e.post(t, tok, validBody), http.StatusUnauthorized)
	wantStatus(t, "db acme reads env acme's", e.get(t, tok, acmes), http.StatusUnauthorized)
	logs := e.logs.String()
	if !strings.Contains(logs, "in the database and in API_TOKENS") || !strings.Contains(logs, store.TokenID(tok)) {
		t.Errorf("the refusal is not logged with the token's id:\n%s", logs)
	}
	if strings.Contains(logs, tok) {
		t.Errorf("logs reveal the token:\n%s", logs)
	}
}

// The api refuses to start when an API_TOKENS client is also in the
// database.
func TestRunRefusesClientNameClash(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	url := pgtest.NewURL(t)
	db, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dbClient(t, store.New(db), "globex")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = Run(ctx, Config{
		Addr: servertest.FreeAddr(t), Tokens: testTokens, NATSURL: ns.URL, DatabaseURL: url,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err == nil || !strings.Contains(err.Error(), "API_TOKENS: client globex is also a client in the database") {
		t.Errorf("Run = %v", err)
	}
	if ctx.Err() != nil {
		t.Error("Run retried a clash until its deadline")
	}
}

// A database that does not answer: a database token is a 503 (the client
// should retry, not think its token bad), an API_TOKENS one still works.
func TestDBTokensDatabaseDown(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.TokenCacheTTL = -1 })
	tok := dbClient(t, e.store, "shop")
	e.db.Close()
	r := e.post(t, tok, validBody)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || r.body["message"] != MsgAuthUnavailable {
		t.Errorf("db token: %d %q %s", r.status, r.header.Get("Retry-After"), r.raw)
	}
	wantStatus(t, "env token", e.post(t, acmeToken, validBody), http.StatusAccepted)
	// A malformed token is refused without asking the database.
	wantStatus(t, "malformed token", e.post(t, "stk_nope", validBody), http.StatusUnauthorized)
}

func TestConfigFromEnvWithoutTokens(t *testing.T) {
	t.Parallel()
	e := baseEnv()
	delete(e, "API_TOKENS")
	c, err := ConfigFromEnv(env(e))
	if err != nil || len(c.Tokens) != 0 {
		t.Errorf("ConfigFromEnv without API_TOKENS = %v, %v", c.Tokens, err)
	}
}

// lookups is a fake token table that counts the lookups.
type lookups struct {
	mu      sync.Mutex
	clients map[store.TokenDigest]store.TokenMatch
	err     error
	calls   atomic.Int64
	block   chan struct{} // lookups wait on it when not nil
	active  atomic.Int64
	peak    atomic.Int64
}

func (l *lookups) lookup(ctx context.Context, d store.TokenDigest) (store.TokenMatch, error) {
	l.calls.Add(1)
	n := l.active.Add(1)
	defer l.active.Add(-1)
	for {
		p := l.peak.Load()
		if n <= p || l.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if l.block != nil {
		select {
		case <-l.block:
		case <-ctx.Done():
			return store.TokenMatch{}, ctx.Err()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return store.TokenMatch{}, l.err
	}
	m, ok := l.clients[d]
	if !ok {
		return store.TokenMatch{}, store.ErrTokenNotFound
	}
	return m, nil
}

func (l *lookups) set(tok, client string, expiresIn time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := store.DigestOf(tok)
	if client == "" {
		delete(l.clients, d)
		return
	}
	l.clients[d] = store.TokenMatch{Digest: d, Client: client, ExpiresIn: expiresIn}
}

func newTestDBTokens(t *testing.T, ttl time.Duration) (*dbTokens, *lookups, *time.Time) {
	t.Helper()
	l := &lookups{clients: map[store.TokenDigest]store.TokenMatch{}}
	d := newDBTokens(l.lookup, testTokens, slog.New(slog.NewTextHandler(io.Discard, nil)), ttl, DefaultTokenStaleFor)
	now := time.Date(2024, 3, 21, 11, 30, 0, 0, time.UTC)
	d.now = func() time.Time { return now }
	return d, l, &now
}

func mustToken(t testing.TB) string {
	t.Helper()
	tok, err := store.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// The cache: how long a disable or revoke takes, and what reaches the
// database.
func TestDBTokensCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := func(d *dbTokens, tok string) string {
		t.Helper()
		c, err := d.client(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	t.Run("malformed tokens are not looked up", func(t *testing.T) {
		d, l, _ := newTestDBTokens(t, time.Second)
		tok := mustToken(t)
		for _, bad := range []string{"", "nope", acmeToken, tok[:len(tok)-1], tok + "x", "STK_" + tok[4:], tok[:20] + "/" + tok[21:]} {
			if c := client(d, bad); c != "" {
				t.Errorf("%q authenticates as %q", bad, c)
			}
		}
		if n := l.calls.Load(); n != 0 {
			t.Errorf("%d lookups, want none", n)
		}
	})

	t.Run("found: reused for the ttl, then looked up again", func(t *testing.T) {
		d, l, now := newTestDBTokens(t, 5*time.Second)
		tok := mustToken(t)
		l.set(tok, "shop", 0)
		if c := client(d, tok); c != "shop" {
			t.Fatalf("client = %q", c)
		}
		l.set(tok, "", 0) // disabled or revoked
		*now = now.Add(4 * time.Second)
		if c := client(d, tok); c != "shop" || l.calls.Load() != 1 {
			t.Errorf("within the ttl: %q after %d lookups, want shop after 1", c, l.calls.Load())
		}
		*now = now.Add(time.Second)
		if c := client(d, tok); c != "" || l.calls.Load() != 2 {
			t.Errorf("past the ttl: %q after %d lookups, want refused after 2", c, l.calls.Load())
		}
	})

	t.Run("not found: reused for the ttl too", func(t *testing.T) {
		d, l, now := newTestDBTokens(t, 5*time.Second)
		tok := mustToken(t)
		for range 100 {
			if c := client(d, tok); c != "" {
				t.Fatalf("client = %q", c)
			}
		}
		if n := l.calls.Load(); n != 1 {
			t.Errorf("100 tries of one bad token made %d lookups, want 1", n)
		}
		l.set(tok, "shop", 0) // created since
		*now = now.Add(5 * time.Second)
		if c := client(d, tok); c != "shop" {
			t.Errorf("past the ttl: %q", c)
		}
	})

	t.Run("a token expiring sooner is cached until then", func(t *testing.T) {
		d, l, now := newTestDBTokens(t, 5*time.Second)
		tok := mustToken(t)
		l.set(tok, "shop", time.Second)
		client(d, tok)
		l.set(tok, "", 0)
		*now = now.Add(time.Second)
		if c := client(d, tok); c != "" {
			t.Errorf("past its expiry, a cached token authenticates as %q", c)
		}
	})

	t.Run("no cache", func(t *testing.T) {
		d, l, _ := newTestDBTokens(t, -1)
		tok := mustToken(t)
		l.set(tok, "shop", 0)
		client(d, tok)
		client(d, tok)
		if n := l.calls.Load(); n != 2 {
			t.Errorf("%d lookups, want 2", n)
		}
	})

	t.Run("errors are not cached", func(t *testing.T) {
		d, l, _ := newTestDBTokens(t, 5*time.Second)
		tok := mustToken(t)
		l.set(tok, "shop", 0)
		l.err = errors.New("connection refused")
		if _, err := d.client(ctx, tok); err == nil {
			t.Fatal("no error")
		}
		l.err = nil
		if c := client(d, tok); c != "shop" {
			t.Errorf("after the error: %q", c)
		}
	})

	t.Run("bounded", func(t *testing.T) {
		d, _, _ := newTestDBTokens(t, time.Hour)
		for range tokenCacheMax + 500 {
			client(d, mustToken(t))
		}
		if n := len(d.gone); n > tokenCacheMax || n < tokenCacheMax*8/10 {
			t.Errorf("%d tokens not found are cached, want at most %d and not much fewer", n, tokenCacheMax)
		}
	})

	t.Run("a flood waits for a few lookup slots, the rest are refused at once", func(t *testing.T) {
		d, l, _ := newTestDBTokens(t, time.Second)
		l.block = make(chan struct{})
		same := mustToken(t)
		var wg sync.WaitGroup
		var busy atomic.Int64
		for i := range 40 {
			tok := same
			if i%2 == 0 {
				tok = mustToken(t)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := d.client(ctx, tok); errors.Is(err, errLookupsBusy) {
					busy.Add(1)
				}
			}()
		}
		// Every request refused or waiting on a lookup before any lookup
		// answers: one coming later could take a place given back.
		wait.For(t, "every request to be refused or waiting", func() bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			n := int(busy.Load())
			for _, f := range d.flights {
				n += f.waiters
			}
			return n == 40
		})
		close(l.block)
		wg.Wait()
		if p := l.peak.Load(); p > maxTokenLookups {
			t.Errorf("%d lookups at once, want at most %d", p, maxTokenLookups)
		}
		// 20 distinct tokens and one token asked 20 times at once: one
		// lookup each, as many as there are places.
		if n := l.calls.Load(); n > maxTokenLookups+maxTokenWaiting {
			t.Errorf("%d lookups, want at most %d", n, maxTokenLookups+maxTokenWaiting)
		}
		if n := busy.Load(); n < 40-20-(maxTokenLookups+maxTokenWaiting) || n > 40-(maxTokenLookups+maxTokenWaiting) {
			t.Errorf("%d refused at once", n)
		}
	})
}

// Lookups saturated by tokens never seen: a token found valid is checked
// again apart from them, and let in on its cached answer for a bounded time
// when that check does not answer; a wait ends with its request.
func TestDBTokensSaturated(t *testing.T) {
	t.Parallel()
	const ttl = 5 * time.Second
	type step struct {
		after time.Duration // since the token was found valid
		want  string        // "" refused; "error" when it cannot be checked
	}
	tests := []struct {
		name string
		// db: "blocked" (lookups hang), "revoked" (answers not found),
		// "down" (answers an error).
		db    string
		steps []step
	}{
		{"fresh: no lookup", "blocked", []step{{ttl - time.Millisecond, "shop"}}},
		{"stale while the check hangs, up to ttl + stale", "blocked",
			[]step{{ttl, "shop"}, {ttl + DefaultTokenStaleFor - time.Millisecond, "shop"},
				{ttl + DefaultTokenStaleFor, "error"}}}, // once the check's own 5s are up
		{"stale while the database is down, up to ttl + stale", "down",
			[]step{{ttl, "shop"}, {ttl + DefaultTokenStaleFor - time.Millisecond, "shop"}, {ttl + DefaultTokenStaleFor, "error"}}},
		{"revoked: refused at the ttl when the check answers", "revoked", []step{{ttl, ""}, {ttl + time.Second, ""}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			d, l, now := newTestDBTokens(t, ttl)
			start := *now
			tok := mustToken(t)
			l.set(tok, "shop", 0)
			if c, err := d.client(ctx, tok); c != "shop" || err != nil {
				t.Fatalf("first lookup: %q %v", c, err)
			}
			// A flood of tokens never seen takes every slot and place.
			l.block = make(chan struct{})
			defer close(l.block)
			flood, cancelFlood := context.WithCancel(ctx)
			defer cancelFlood()
			for range maxTokenLookups + maxTokenWaiting {
				go func() { _, _ = d.client(flood, mustToken(t)) }()
			}
			wait.For(t, "the flood to take every lookup", func() bool {
				return l.active.Load() == maxTokenLookups && len(d.unknownPool.room) == cap(d.unknownPool.room)
			})
			if _, err := d.client(ctx, mustToken(t)); !errors.Is(err, errLookupsBusy) {
				t.Errorf("a new token during the flood: %v, want errLookupsBusy", err)
			}
			switch tc.db {
			case "revoked":
				d.lookup = func(ctx context.Context, dg store.TokenDigest) (store.TokenMatch, error) {
					if dg == store.DigestOf(tok) {
						return store.TokenMatch{}, store.ErrTokenNotFound
					}
					return l.lookup(ctx, dg)
				}
			case "down":
				d.lookup = func(ctx context.Context, dg store.TokenDigest) (store.TokenMatch, error) {
					return store.TokenMatch{}, errors.New("connection refused")
				}
			}
			for _, s := range tc.steps {
				*now = start.Add(s.after)
				c, err := d.client(ctx, tok)
				got := c
				switch {
				case errors.Is(err, errLookupsBusy):
					got = "busy"
				case err != nil:
					got = "error"
				}
				if got != s.want {
					t.Errorf("%s after it was found: %q (%v), want %q", s.after, got, err, s.want)
				}
			}
		})
	}

	t.Run("a wait ends with its request", func(t *testing.T) {
		d, l, _ := newTestDBTokens(t, ttl)
		l.block = make(chan struct{})
		defer close(l.block)
		ctx := context.Background()
		for range maxTokenLookups {
			go func() { _, _ = d.client(ctx, mustToken(t)) }()
		}
		wait.For(t, "the lookups", func() bool { return l.active.Load() == maxTokenLookups })
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { _, err := d.client(rctx, mustToken(t)); done <- err }()
		wait.For(t, "a wait for a slot", func() bool { return len(d.unknownPool.room) == maxTokenLookups+1 })
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
		// Its place is given back: no one waits for that lookup any more.
		wait.For(t, "the place to be given back", func() bool { return len(d.unknownPool.room) == maxTokenLookups })
	})
}

// The cache's clocks start when the lookup starts, not when its answer
// comes: the answer tells how the token stood at some moment between the
// two, so a slow lookup must not stretch how long a revoke takes.
func TestDBTokensCacheFromLookupStart(t *testing.T) {
	t.Parallel()
	const ttl, slow = 5 * time.Second, 3 * time.Second
	type step struct {
		after time.Duration // since the first lookup started
		want  string        // "" refused; "error" when it cannot be checked
	}
	tests := []struct {
		name  string
		db    string // after the first lookup: "revoked" or "down"
		steps []step
	}{
		{"revoked: refused at the ttl", "revoked", []step{{ttl - time.Millisecond, "shop"}, {ttl, ""}}},
		{"database down: stale up to ttl + stale", "down",
			[]step{{ttl + DefaultTokenStaleFor - time.Millisecond, "shop"}, {ttl + DefaultTokenStaleFor, "error"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			d, l, now := newTestDBTokens(t, ttl)
			start := *now
			tok := mustToken(t)
			l.set(tok, "shop", 0)
			d.lookup = func(ctx context.Context, dg store.TokenDigest) (store.TokenMatch, error) {
				m, err := l.lookup(ctx, dg)
				*now = now.Add(slow) // the answer comes late
				return m, err
			}
			if c, err := d.client(ctx, tok); c != "shop" || err != nil {
				t.Fatalf("first lookup: %q %v", c, err)
			}
			d.lookup = func(ctx context.Context, dg store.TokenDigest) (store.TokenMatch, error) {
				if tc.db == "down" {
					return store.TokenMatch{}, errors.New("connection refused")
				}
				return store.TokenMatch{}, store.ErrTokenNotFound
			}
			for _, s := range tc.steps {
				*now = start.Add(s.after)
				c, err := d.client(ctx, tok)
				got := c
				if err != nil {
					got = "error"
				}
				if got != s.want {
					t.Errorf("%s after the first lookup started: %q (%v), want %q", s.after, got, err, s.want)
				}
			}
		})
	}

	t.Run("a token's expiry counts from the lookup's start too", func(t *testing.T) {
		d, l, now := newTestDBTokens(t, ttl)
		start := *now
		tok := mustToken(t)
		l.set(tok, "shop", 2*time.Second)
		d.lookup = func(ctx context.Context, dg store.TokenDigest) (store.TokenMatch, error) {
			m, err := l.lookup(ctx, dg)
			*now = now.Add(time.Second)
			return m, err
		}
		if c, err := d.client(context.Background(), tok); c != "shop" || err != nil {
			t.Fatalf("first lookup: %q %v", c, err)
		}
		l.set(tok, "", 0) // expired
		*now = start.Add(2 * time.Second)
		if c, err := d.client(context.Background(), tok); c != "" || err != nil {
			t.Errorf("past its expiry: %q %v, want refused", c, err)
		}
	})
}

// The tokens the database lists as authenticating are marked known, never
// valid: each is still looked up before it is let in, and a listing does not
// stretch a cached answer.
func TestDBTokensLoadKnown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	list := func(toks ...string) func(context.Context, int) ([]store.TokenDigest, error) {
		return func(context.Context, int) ([]store.TokenDigest, error) {
			var out []store.TokenDigest
			for _, tok := range toks {
				out = append(out, store.DigestOf(tok))
			}
			return out, nil
		}
	}
	t.Run("listed, then revoked: looked up and refused", func(t *testing.T) {
		d, l, _ := newTestDBTokens(t, 5*time.Second)
		tok := mustToken(t)
		d.active = list(tok)
		if err := d.loadKnown(ctx); err != nil {
			t.Fatal(err)
		}
		if !d.known(tok) {
			t.Fatal("a listed token is not known")
		}
		if c, err := d.client(ctx, tok); c != "" || err != nil || l.calls.Load() != 1 {
			t.Errorf("revoked since it was listed: %q %v after %d lookups, want refused after 1", c, err, l.calls.Load())
		}
		if d.known(tok) {
			t.Error("still known once found revoked")
		}
	})
	t.Run("a listing keeps a cached answer's clocks", func(t *testing.T) {
		d, l, now := newTestDBTokens(t, 5*time.Second)
		start := *now
		tok := mustToken(t)
		l.set(tok, "shop", 0)
		if c, err := d.client(ctx, tok); c != "shop" || err != nil {
			t.Fatalf("first lookup: %q %v", c, err)
		}
		l.set(tok, "", 0) // revoked
		*now = start.Add(4 * time.Second)
		d.active = list(tok) // listed just before the revoke
		if err := d.loadKnown(ctx); err != nil {
			t.Fatal(err)
		}
		*now = start.Add(5 * time.Second)
		if c, err := d.client(ctx, tok); c != "" || err != nil {
			t.Errorf("at the ttl of its first answer: %q %v, want refused", c, err)
		}
	})
	t.Run("no cache: nothing known", func(t *testing.T) {
		d, _, _ := newTestDBTokens(t, -1)
		tok := mustToken(t)
		d.active = list(tok)
		if err := d.loadKnown(ctx); err != nil || d.known(tok) {
			t.Errorf("known %v, error %v; want not known", d.known(tok), err)
		}
	})
}

func TestAuthenticatorPrefersEnvTokens(t *testing.T) {
	t.Parallel()
	d, l, _ := newTestDBTokens(t, time.Second)
	a := &authenticator{env: newTokenSet(testTokens), db: d}
	tok := mustToken(t)
	l.set(tok, "shop", 0)
	for token, want := range map[string]string{acmeToken: "acme", globexToken: "globex", tok: "shop", "x": ""} {
		if got, err := a.client(context.Background(), token, netip.Addr{}); err != nil || got != want {
			t.Errorf("client(%s) = %q %v, want %q", fmt.Sprintf("%.8s…", token), got, err, want)
		}
	}
	if n := l.calls.Load(); n != 1 {
		t.Errorf("%d database lookups, want 1 (env tokens are not looked up)", n)
	}
}

// Production: no API_TOKENS, only the database's clients, through Run.
func TestRunDatabaseClientsOnly(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	cfg := runConfig(t, ns)
	cfg.Tokens = nil
	logs := &logtest.Buffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	db, err := store.Open(context.Background(), cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	shop := dbClient(t, store.New(db), "shop")
	base, stop := startRun(t, cfg)

	resp, body := call(t, http.MethodPost, base+PushPath, shop, validBody)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST = %d %v", resp.StatusCode, body)
	}
	id := body["tracking_id"].(string)
	if resp, body := call(t, http.MethodGet, base+RecordPath+id, shop, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("GET own = %d %v", resp.StatusCode, body)
	}
	if resp, _ := call(t, http.MethodPost, base+PushPath, acmeToken, validBody); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a token of no client = %d", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Errorf("Run = %v", err)
	}
	if !strings.Contains(logs.String(), "API_TOKENS is empty") || strings.Contains(logs.String(), shop) {
		t.Errorf("start-up log:\n%s", logs.String())
	}
}
