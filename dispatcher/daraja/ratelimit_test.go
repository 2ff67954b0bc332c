package daraja_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
)

// recorder stands before the fake Daraja and records when each request
// (OAuth, push, query) arrived.
type recorder struct {
	mu    sync.Mutex
	times []time.Time
	paths []string
}

func (r *recorder) arrivals() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]time.Time(nil), r.times...)
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// recordedFake starts the fake with a recording proxy before it and returns
// the proxy's URL.
func recordedFake(t *testing.T) (*darajatest.Server, *recorder, string) {
	t.Helper()
	fake, err := darajatest.NewServer(darajatest.Options{CallbackDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	target, err := url.Parse(fake.URL())
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.times = append(rec.times, time.Now())
		rec.paths = append(rec.paths, r.URL.Path)
		rec.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return fake, rec, srv.URL
}

func limitedConfig(base string, maxRPS float64) daraja.Config {
	return daraja.Config{
		BaseURL:        base,
		ConsumerKey:    darajatest.DefaultConsumerKey,
		ConsumerSecret: darajatest.DefaultConsumerSecret,
		ShortCode:      darajatest.DefaultShortCode,
		PassKey:        darajatest.DefaultPassKey,
		Timeout:        5 * time.Second,
		MaxRPS:         maxRPS,
	}
}

// busiestSecond is the most requests that arrived within any one second.
func busiestSecond(times []time.Time) int {
	most := 0
	for i := range times {
		n := 0
		for j := i; j < len(times) && times[j].Sub(times[i]) < time.Second; j++ {
			n++
		}
		most = max(most, n)
	}
	return most
}

// TestMaxRPS: a burst of pushes and queries, from two clients of the same
// Daraja app (the dispatcher's and the reconciler's), reaches Daraja spread
// out at MaxRPS, the OAuth call included.
func TestMaxRPS(t *testing.T) {
	const rps, pushes, queries = 5, 12, 4
	_, rec, base := recordedFake(t)
	dispatcherClient := newClient(t, limitedConfig(base, rps))
	reconcilerClient := newClient(t, limitedConfig(base, rps))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for i := range pushes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := dispatcherClient.Push(ctx, daraja.PushRequest{
				Phone: fmt.Sprintf("2547123400%02d", i), Amount: 10, AccountReference: "R",
				CallbackURL: "https://cb.example.com/hooks/stk-push/x"})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	for range queries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// An unknown id: the answer does not matter, the call does.
			_, _ = reconcilerClient.Query(ctx, "ws_CO_unknown")
		}()
	}
	wg.Wait()

	times := rec.arrivals()
	// Two OAuth calls at most (one per client) besides the pushes and queries.
	if len(times) < pushes+queries+1 || len(times) > pushes+queries+2 {
		t.Fatalf("%d requests reached Daraja, want %d or %d", len(times), pushes+queries+1, pushes+queries+2)
	}
	// At 5/s, evenly spaced: 5 in any second, one more for timing slack.
	if most := busiestSecond(times); most > rps+1 {
		t.Errorf("%d requests within one second, want at most %d (MaxRPS %d, with slack)", most, rps+1, rps)
	}
	// n calls at 5/s take (n-1)/5 s from the first to the last.
	want := time.Duration(len(times)-1) * time.Second / rps
	if span := times[len(times)-1].Sub(times[0]); span < want*9/10 {
		t.Errorf("the calls took %s, want at least %s", span, want*9/10)
	}
}

// TestMaxRPSWaitRespectsContext: a call waiting for a slot gives up when its
// context does, and nothing is sent.
func TestMaxRPSWaitRespectsContext(t *testing.T) {
	fake, rec, base := recordedFake(t)
	c := newClient(t, limitedConfig(base, 1)) // a slot a second
	ctx := context.Background()
	if _, err := c.Query(ctx, "ws_CO_unknown"); !errors.Is(err, daraja.ErrUnknownTransaction) {
		t.Fatalf("first query: %v", err) // the OAuth call took the first slot, this waited 1s
	}
	sent := len(rec.arrivals())

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Push(short, daraja.PushRequest{Phone: "254712340099", Amount: 10, AccountReference: "R",
		CallbackURL: "https://cb.example.com/hooks/stk-push/x"})
	var e *daraja.Error
	if !errors.As(err, &e) || e.Kind != daraja.KindTransient || e.RequestSent {
		t.Fatalf("push past its deadline: %v, want a transient error, not sent", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("gave up after %s, not when its context would end", d)
	}

	gone, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Push(gone, daraja.PushRequest{Phone: "254712340098", Amount: 10, AccountReference: "R",
		CallbackURL: "https://cb.example.com/hooks/stk-push/x"})
	if daraja.KindOf(err) != daraja.KindCanceled {
		t.Errorf("canceled push: %v, want KindCanceled", err)
	}
	if got := len(rec.arrivals()); got != sent || len(fake.Pushes()) != 0 {
		t.Errorf("%d requests and %d pushes reached Daraja after the first, want none", got-sent, len(fake.Pushes()))
	}
}

func TestMaxRPSRefusesNegative(t *testing.T) {
	if _, err := daraja.New(limitedConfig("https://sandbox.safaricom.co.ke", -1)); err == nil {
		t.Error("MaxRPS -1 accepted")
	}
}
