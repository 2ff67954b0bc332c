package api

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events/kit/webhook"
)

// tableLookup resolves from a table: a host not in it does not resolve.
func tableLookup(table map[string]string) webhook.Lookup {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		a, ok := table[host]
		if !ok {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{netip.MustParseAddr(a)}, nil
	}
}

var callbackDNS = map[string]string{
	"pay.shop.example": "203.0.113.10",
	"inside.example":   "10.1.2.3",
	"meta.example":     "169.254.169.254",
	"localhost":        "127.0.0.1",
}

// optIn makes the database client name and lets it give a callback_url.
func optIn(t *testing.T, s *store.Store, name string) string {
	t.Helper()
	tok := dbClient(t, s, name)
	if _, _, err := s.SetCallbackURLAllowed(context.Background(), name, true,
		store.WebhookEndpoint{ID: uuid.NewString(), Secret: []byte("sealed")}); err != nil {
		t.Fatal(err)
	}
	return tok
}

func callbackBody(url string) string {
	return `{"phone":"0712345678","amount":1500,"reference":"INV-1","callback_url":` + url + `}`
}

// TestCallbackURL: POST /api/stk-push takes a callback_url from a client
// that opted in, checked as an endpoint's URL is at registration, and puts
// it on stk.requested; anything else is a 422 naming the field.
func TestCallbackURL(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.WebhookLookup = tableLookup(callbackDNS) })
	shop := optIn(t, e.store, "shop")
	plain := dbClient(t, e.store, "plain")
	off := optIn(t, e.store, "was-on")
	if _, _, err := e.store.SetCallbackURLAllowed(context.Background(), "was-on", false, store.WebhookEndpoint{}); err != nil {
		t.Fatal(err)
	}
	long := `"https://pay.shop.example/` + strings.Repeat("a", webhook.MaxURLLength) + `"`
	for _, c := range []struct {
		name, token, url string
		status           int
		msg              string // in the field's message
	}{
		{"opted in", shop, `"https://pay.shop.example/stk/INV-1?order=42"`, http.StatusAccepted, ""},
		{"null is none", plain, `null`, http.StatusAccepted, ""},
		{"empty is none", plain, `""`, http.StatusAccepted, ""},
		{"database client not opted in", plain, `"https://pay.shop.example/cb"`, http.StatusUnprocessableEntity, "not enabled"},
		{"opted out", off, `"https://pay.shop.example/cb"`, http.StatusUnprocessableEntity, "not enabled"},
		{"API_TOKENS client", acmeToken, `"https://pay.shop.example/cb"`, http.StatusUnprocessableEntity, "not enabled"},
		{"http", shop, `"http://pay.shop.example/cb"`, http.StatusUnprocessableEntity, "https only"},
		{"loopback literal", shop, `"https://127.0.0.1/cb"`, http.StatusUnprocessableEntity, "loopback"},
		{"private literal", shop, `"https://10.0.0.7/cb"`, http.StatusUnprocessableEntity, "private"},
		{"name resolving private", shop, `"https://inside.example/cb"`, http.StatusUnprocessableEntity, "not public"},
		{"cloud metadata", shop, `"https://meta.example/latest"`, http.StatusUnprocessableEntity, "not public"},
		{"localhost", shop, `"https://localhost/cb"`, http.StatusUnprocessableEntity, "not public"},
		{"does not resolve", shop, `"https://nowhere.example/cb"`, http.StatusUnprocessableEntity, "does not resolve"},
		{"user information", shop, `"https://user:pw@pay.shop.example/cb"`, http.StatusUnprocessableEntity, "user information"},
		{"too long", shop, long, http.StatusUnprocessableEntity, "longer than"},
		{"not a string", shop, `42`, http.StatusUnprocessableEntity, "must be a string"},
		{"not a URL", shop, `"pay.shop.example/cb"`, http.StatusUnprocessableEntity, "https only"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.post(t, c.token, callbackBody(c.url))
			if r.status != c.status {
				t.Fatalf("POST = %d %s, want %d", r.status, r.raw, c.status)
			}
			if c.status != http.StatusAccepted {
				errs, _ := r.body["errors"].(map[string]any)
				msgs, _ := errs["callback_url"].([]any)
				if len(msgs) != 1 || !strings.Contains(msgs[0].(string), c.msg) {
					t.Errorf("errors = %v, want callback_url's message with %q", r.body["errors"], c.msg)
				}
				if strings.Contains(r.raw, "no such host") {
					t.Errorf("the resolver's own words are served: %s", r.raw)
				}
				return
			}
			_, ev, _ := e.requested(t, r.body["tracking_id"].(string))
			want := ""
			if c.token == shop {
				want = "https://pay.shop.example/stk/INV-1?order=42"
			}
			if ev.CallbackURL != want {
				t.Errorf("stk.requested's callback_url = %q, want %q", ev.CallbackURL, want)
			}
		})
	}
}

// TestCallbackURLDevMode: WEBHOOK_DEV_MODE allows http and loopback, as
// for endpoints; private networks stay refused.
func TestCallbackURLDevMode(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) {
		o.WebhookLookup = tableLookup(callbackDNS)
		o.WebhookPolicy = webhook.Policy{Dev: true}
	})
	shop := optIn(t, e.store, "shop")
	if r := e.post(t, shop, callbackBody(`"http://localhost:9000/cb"`)); r.status != http.StatusAccepted {
		t.Errorf("http://localhost in dev mode = %d %s", r.status, r.raw)
	}
	if r := e.post(t, shop, callbackBody(`"http://inside.example/cb"`)); r.status != http.StatusUnprocessableEntity {
		t.Errorf("a private address in dev mode = %d %s", r.status, r.raw)
	}
}

// TestCallbackURLIdempotency: the callback_url is part of the request an
// Idempotency-Key stands for.
func TestCallbackURLIdempotency(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.WebhookLookup = tableLookup(callbackDNS) })
	shop := optIn(t, e.store, "shop")
	post := func(url string) response {
		req := newRequest(http.MethodPost, PushPath, shop, ctJSON, callbackBody(url))
		req.Header.Set(IdempotencyHeader, "order-42")
		return e.do(t, req)
	}
	first := post(`"https://pay.shop.example/a"`)
	if first.status != http.StatusAccepted {
		t.Fatalf("first = %d %s", first.status, first.raw)
	}
	if r := post(`"https://pay.shop.example/a"`); r.status != http.StatusAccepted || r.body["tracking_id"] != first.body["tracking_id"] {
		t.Errorf("the same request again = %d %s", r.status, r.raw)
	}
	if r := post(`"https://pay.shop.example/b"`); r.status != http.StatusUnprocessableEntity {
		t.Errorf("another callback_url under the key = %d %s, want 422", r.status, r.raw)
	}
	// Keys stored before callback_url existed still match their requests.
	if got := requestHash(Request{Phone: "254712345678", Amount: 1, Reference: "r"}); got != "7ddd724cfaa70d2df04bab861b7164e09233632a63c5c62a5109c5ba1d37b9cb" {
		t.Errorf("a request without callback_url hashes to %s, not as before", got)
	}
}

// TestCallbackURLReplayOutlivesItsCheck: a keyed request that was accepted
// is answered as accepted when retried under its key, even when its
// callback_url could not be checked again now (the merchant's DNS down, the
// client's opt-in since switched off). A 422 there would tell a client whose
// first answer was lost that nothing was accepted, while its customer was
// prompted: it would ask again under a new key and prompt twice.
func TestCallbackURLReplayOutlivesItsCheck(t *testing.T) {
	t.Parallel()
	var dnsDown atomic.Bool
	table := tableLookup(callbackDNS)
	e := newTestEnv(t, func(o *Options) {
		o.WebhookLookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			if dnsDown.Load() {
				return nil, errors.New("i/o timeout")
			}
			return table(ctx, host)
		}
	})
	shop := optIn(t, e.store, "shop")
	post := func(key string) response {
		req := newRequest(http.MethodPost, PushPath, shop, ctJSON, callbackBody(`"https://pay.shop.example/a"`))
		req.Header.Set(IdempotencyHeader, key)
		return e.do(t, req)
	}
	first := post("order-1")
	if first.status != http.StatusAccepted {
		t.Fatalf("first = %d %s", first.status, first.raw)
	}
	dnsDown.Store(true)
	if r := post("order-1"); r.status != http.StatusAccepted || r.body["tracking_id"] != first.body["tracking_id"] {
		t.Errorf("retry of an accepted request while its host does not resolve = %d %s, want 202 with tracking id %v",
			r.status, r.raw, first.body["tracking_id"])
	}
	dnsDown.Store(false)

	second := post("order-2")
	if second.status != http.StatusAccepted {
		t.Fatalf("second = %d %s", second.status, second.raw)
	}
	if _, _, err := e.store.SetCallbackURLAllowed(context.Background(), "shop", false, store.WebhookEndpoint{}); err != nil {
		t.Fatal(err)
	}
	if r := post("order-2"); r.status != http.StatusAccepted || r.body["tracking_id"] != second.body["tracking_id"] {
		t.Errorf("retry of an accepted request after the opt-in was switched off = %d %s, want 202 with tracking id %v",
			r.status, r.raw, second.body["tracking_id"])
	}
}
