package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events/testkit/wait"
)

// A flood of made-up, well-formed tokens from many addresses, half of them
// sent by clients that hang up at once, while a real database client polls
// its record and posts: the real client never gets a 503 and is not held
// up for long (bounds below, relative to the flood), and the api's
// goroutines and heap come back down once the flood stops. The token
// cache's ttl is cut to 100ms so that the real client's token needs
// checking again many times during the flood.
func TestJunkTokenFloodDoesNotLockOutRealClients(t *testing.T) {
	// Not parallel: its bound is the real client's latency, which
	// other tests sharing the cores would measure instead.
	e := newTestEnv(t, func(o *Options) {
		o.TokenCacheTTL = 100 * time.Millisecond
		o.AuthFailLimit, o.AuthFailBurst = DefaultAuthFailLimit, DefaultAuthFailBurst
		o.Logger = slog.New(slog.DiscardHandler)
	})
	shop := dbClient(t, e.store, "shop")
	id := accepted(t, e.post(t, shop, validBody))

	memBefore, goroutinesBefore := memInUse(), runtime.NumGoroutine()

	const (
		attackers = 8   // each waits for its answers
		perWait   = 250 // requests each attacker waits for
		waves     = 4   // of requests sent at once and hung up on
		perWave   = 4000
		addresses = 1000
	)
	// Every junk request is made beforehand: the attackers' work is not
	// the api's.
	junk := func(ctx context.Context, n int) *http.Request {
		req := newRequest(http.MethodGet, RecordPath+uuid.NewString(), mustToken(t), "", "").WithContext(ctx)
		req.RemoteAddr = fmt.Sprintf("10.0.%d.%d:40000", n%addresses/250, 1+n%addresses%250)
		return req
	}
	waiting := make([][]*http.Request, attackers)
	for a := range waiting {
		for i := range perWait {
			waiting[a] = append(waiting[a], junk(context.Background(), a*perWait+i))
		}
	}
	hangUps := make([][]*http.Request, waves)
	cancels := make([][]context.CancelFunc, waves)
	for w := range hangUps {
		for i := range perWave {
			ctx, cancel := context.WithCancel(context.Background())
			hangUps[w] = append(hangUps[w], junk(ctx, w*perWave+i))
			cancels[w] = append(cancels[w], cancel)
		}
	}

	// The real client, until told to stop.
	stopClient := make(chan struct{})
	var latencies []time.Duration
	var failures []string
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		for post := false; ; post = !post {
			select {
			case <-stopClient:
				return
			default:
			}
			start := time.Now()
			var r response
			want := http.StatusOK
			if post {
				r, want = e.post(t, shop, validBody), http.StatusAccepted
			} else {
				r = e.get(t, shop, id)
			}
			latencies = append(latencies, time.Since(start))
			if r.status != want {
				failures = append(failures, fmt.Sprintf("%d %s", r.status, r.raw))
			}
		}
	}()

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		answers = map[int]int{}
		sent    atomic.Int64 // requests waited for, answered
	)
	floodStart := time.Now()
	for a := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, req := range waiting[a] {
				rec := httptest.NewRecorder()
				e.h.ServeHTTP(rec, req)
				waiting[a][i] = nil
				sent.Add(1)
				mu.Lock()
				answers[rec.Code]++
				mu.Unlock()
			}
		}()
	}
	// The waves, spread over the attackers' requests, each sent as fast
	// as goroutines start and hung up on as soon as it is sent.
	var hungUp sync.WaitGroup
	for w := range waves {
		wait.For(t, "the attackers' requests", func() bool { return sent.Load() >= int64(w*attackers*perWait/waves) })
		for i, req := range hangUps[w] {
			hungUp.Add(1)
			go func() { defer hungUp.Done(); e.h.ServeHTTP(httptest.NewRecorder(), req) }()
			cancels[w][i]()
		}
		hangUps[w], cancels[w] = nil, nil
	}
	memFlood, goroutinesFlood := memInUse(), runtime.NumGoroutine()
	wg.Wait()
	flood := time.Since(floodStart)
	// What was hung up on must be let go of, not waited for.
	released := make(chan struct{})
	go func() { hungUp.Wait(); close(released) }()
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Errorf("requests hung up on are still held 5s after the flood, %d goroutines", runtime.NumGoroutine())
	}
	close(stopClient)
	<-clientDone
	<-released
	memAfter, goroutinesAfter := memInUse(), runtime.NumGoroutine()

	slices.Sort(latencies)
	p99 := latencies[len(latencies)*99/100]
	t.Logf("flood: %d well-formed tokens from %d addresses, %d hung up on at once in %d waves, in %s; answers to those waited for: %v",
		waves*perWave+attackers*perWait, addresses, waves*perWave, waves, flood.Round(time.Millisecond), answers)
	t.Logf("real client: %d requests, p50 %s, p99 %s, max %s, %d failed",
		len(latencies), latencies[len(latencies)/2], p99, latencies[len(latencies)-1], len(failures))
	t.Logf("live heap and stacks: %.1f MiB before the flood, %.1f MiB as its last wave is sent (with the goroutines of "+
		"requests not started yet), %.1f MiB after it; goroutines %d, %d, %d; cached: %d tokens not found, %d addresses",
		mib(memBefore), mib(memFlood), mib(memAfter), goroutinesBefore, goroutinesFlood, goroutinesAfter,
		len(e.h.tokens.db.gone), e.h.tokens.failures.size())
	if len(failures) > 0 {
		t.Errorf("the real client failed %d times during the flood, first: %s", len(failures), failures[0])
	}
	// A client locked out is held up for much of the flood, in one long
	// wait or in many. The cores are shared, though: a wave is 4000
	// requests started at once, and the real client's request under way
	// waits for them (on a loaded machine, CI beside other jobs, one such
	// request took 2.84 s of an 8.5 s flood, the client's p50 34 ms). So,
	// with slow a quarter of the flood (a loaded machine stretches the
	// flood as it does the client), the client made more than one request
	// per wave; its median is under a tenth of the flood (or 100ms);
	// all its requests but one per wave are under slow; and those over
	// slow add up to under half the flood. Each fails a client held up for
	// half the flood or more, or slowed on every request, not a slow
	// machine.
	slow := flood / 4
	var held time.Duration
	for _, l := range latencies {
		if l > slow {
			held += l
		}
	}
	switch {
	case len(latencies) <= waves:
		t.Errorf("the real client made %d requests during a flood of %s, want more than %d", len(latencies), flood.Round(time.Millisecond), waves)
	case latencies[len(latencies)/2] > max(100*time.Millisecond, flood/10):
		t.Errorf("the real client's p50 is %s during a flood of %s, want under %s",
			latencies[len(latencies)/2], flood.Round(time.Millisecond), max(100*time.Millisecond, flood/10))
	case latencies[len(latencies)-1-waves] > slow:
		t.Errorf("the real client's slowest request but %d (one per wave) took %s during a flood of %s, want under %s",
			waves, latencies[len(latencies)-1-waves], flood.Round(time.Millisecond), slow)
	case held > flood/2:
		t.Errorf("the real client's requests over %s took %s in all, over half the flood (%s)", slow, held, flood.Round(time.Millisecond))
	}
	// What the flood leaves behind is bounded: the caches' entries.
	if grown := int64(memAfter) - int64(memBefore); grown > 16<<20 {
		t.Errorf("memory in use grew by %.1f MiB after the flood, want under 16 MiB", mib(uint64(grown)))
	}
	if n := len(e.h.tokens.db.gone); n > tokenCacheMax {
		t.Errorf("%d tokens not found cached, want at most %d", n, tokenCacheMax)
	}
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// memInUse is the live heap and the stacks in use after a collection.
func memInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// Failed authentications are limited per source address: past the burst, a
// token that would need a lookup is a 429, whoever the token's client;
// tokens found valid recently and API_TOKENS ones still work from there.
// The source is the TCP peer unless the peer is a trusted proxy.
func TestAuthFailuresLimitedPerSource(t *testing.T) {
	t.Parallel()
	const burst = 3
	e := newTestEnv(t, func(o *Options) {
		o.AuthFailLimit, o.AuthFailBurst = 0.001, burst // no refill during the test
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}
	})
	shop := dbClient(t, e.store, "shop")
	newcomer := dbClient(t, e.store, "newcomer")
	do := func(remote, xff, token string) response {
		t.Helper()
		req := newRequest(http.MethodGet, RecordPath+uuid.NewString(), token, "", "")
		req.RemoteAddr = remote
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		return e.do(t, req)
	}
	// shop's token is found valid from elsewhere first.
	wantStatus(t, "shop", do("192.0.2.200:1000", "", shop), http.StatusNotFound)

	tests := []struct {
		name        string
		remote, xff string
		token       string
		want        int
	}{
		{"bad tokens up to the burst", "192.0.2.1:1000", "", "", http.StatusUnauthorized},
		{"then refused", "192.0.2.1:1001", "", "junk", http.StatusTooManyRequests},
		{"a token found valid still works", "192.0.2.1:1002", "", shop, http.StatusNotFound},
		{"an API_TOKENS token still works", "192.0.2.1:1003", "", acmeToken, http.StatusNotFound},
		{"a valid token never seen (nor loaded) needs a lookup: refused", "192.0.2.1:1004", "", newcomer, http.StatusTooManyRequests},
		{"X-Forwarded-For from an untrusted peer is ignored", "192.0.2.1:1005", "198.51.100.9", "junk", http.StatusTooManyRequests},
		{"another address is not limited", "192.0.2.2:1000", "", "junk", http.StatusUnauthorized},
		{"an IPv6 /64 counts as one address", "[2001:db8:1:2::1]:1000", "", "", http.StatusUnauthorized},
		{"then refused, from another of its addresses", "[2001:db8:1:2::ffff]:1000", "", "junk", http.StatusTooManyRequests},
		{"another /64 is not limited", "[2001:db8:1:3::1]:1000", "", "junk", http.StatusUnauthorized},
		{"behind a trusted proxy: the client's address counts", "10.9.0.1:1000", "198.51.100.7", "", http.StatusUnauthorized},
		{"then refused, whatever it writes to the left", "10.9.0.2:1000", "203.0.113.1, 198.51.100.7", "junk", http.StatusTooManyRequests},
		{"another client behind the proxy is not limited", "10.9.0.1:1000", "198.51.100.8", "junk", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		if tc.token != "" {
			r := do(tc.remote, tc.xff, tc.token)
			wantStatus(t, tc.name, r, tc.want)
			if tc.want == http.StatusTooManyRequests && (r.header.Get("Retry-After") == "" || r.body["message"] != MsgAuthFailuresLimited) {
				t.Errorf("%s: Retry-After %q, body %s", tc.name, r.header.Get("Retry-After"), r.raw)
			}
			continue
		}
		for i := range burst {
			wantStatus(t, fmt.Sprintf("%s (%d)", tc.name, i+1), do(tc.remote, tc.xff, mustToken(t)), tc.want)
		}
	}
}

// A client that hangs up once the lookup of its unknown token has started
// failed to authenticate: hanging up at once must not be a way past the
// limit, which would keep the lookups of unknown tokens busy for free.
func TestAuthFailuresCountHangUps(t *testing.T) {
	t.Parallel()
	const burst = 3
	d, l, _ := newTestDBTokens(t, DefaultTokenCacheTTL)
	l.block = make(chan struct{})
	a := &authenticator{env: newTokenSet(testTokens), db: d, failures: newSourceLimits(0.001, burst)}
	source := netip.MustParseAddr("192.0.2.1")
	for i := range burst {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := a.client(ctx, mustToken(t), source); done <- err }()
		wait.For(t, "the lookup to start", func() bool { return l.calls.Load() == int64(i+1) })
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("request %d hung up on: %v, want context.Canceled", i+1, err)
		}
		l.block <- struct{}{} // the lookup finishes: the token is not found
		wait.For(t, "the lookup to end", func() bool { return l.active.Load() == 0 })
	}
	close(l.block)
	var limited *limitedError
	if _, err := a.client(context.Background(), mustToken(t), source); !errors.As(err, &limited) {
		t.Errorf("after %d hang-ups: %v, want a *limitedError", burst, err)
	}
}

// A neighbour behind the same address (a NAT, an IPv6 /64) that drained its
// failed authentications does not lock out a valid database token that
// needs a lookup (never seen by this api, as after a restart): the api
// knows the tokens that authenticate from the list it loads at start-up
// and every knownReload. A token created since the last load is still
// held back with its address.
func TestAuthFailuresSpareValidTokens(t *testing.T) {
	t.Parallel()
	const burst = 3
	e := newTestEnv(t, func(o *Options) {
		o.AuthFailLimit, o.AuthFailBurst = 0.001, burst // no refill during the test
	})
	shop := dbClient(t, e.store, "shop")
	ctx, stop := context.WithCancel(context.Background())
	loaded := make(chan struct{})
	go func() { defer close(loaded); e.h.tokens.db.keepKnown(ctx) }()
	t.Cleanup(func() { stop(); <-loaded })
	wait.For(t, "the tokens to be loaded", func() bool { return e.h.tokens.db.known(shop) })
	newcomer := dbClient(t, e.store, "newcomer")

	do := func(token string) response {
		t.Helper()
		req := newRequest(http.MethodGet, RecordPath+uuid.NewString(), token, "", "")
		req.RemoteAddr = "192.0.2.1:1000"
		return e.do(t, req)
	}
	for i := range burst {
		wantStatus(t, fmt.Sprintf("a neighbour's junk token (%d)", i+1), do(mustToken(t)), http.StatusUnauthorized)
	}
	wantStatus(t, "then its junk", do(mustToken(t)), http.StatusTooManyRequests)
	wantStatus(t, "a valid token never looked up", do(shop), http.StatusNotFound)
	wantStatus(t, "a valid token created since the last load", do(newcomer), http.StatusTooManyRequests)
}
