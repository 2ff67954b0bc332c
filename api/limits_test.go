package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stkgate/stkgate/events"
)

func TestLimitsFromEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		set     map[string]string
		want    [4]any // RateLimit, RateBurst, PhoneMaxPrompts, PhoneWindow
		wantErr string
	}{
		{"defaults", nil, [4]any{10.0, 20, 5, time.Hour}, ""},
		{"all set", map[string]string{"API_RATE_LIMIT": "2.5", "API_RATE_BURST": "3", "PHONE_MAX_PROMPTS": "2", "PHONE_WINDOW": "30m"},
			[4]any{2.5, 3, 2, 30 * time.Minute}, ""},
		{"burst defaults to two seconds' worth", map[string]string{"API_RATE_LIMIT": "0.2"}, [4]any{0.2, 1, 5, time.Hour}, ""},
		{"rate limit off", map[string]string{"API_RATE_LIMIT": "0", "API_RATE_BURST": "9"}, [4]any{0.0, 0, 5, time.Hour}, ""},
		{"phone limit off", map[string]string{"PHONE_MAX_PROMPTS": "0", "PHONE_WINDOW": "1s"}, [4]any{10.0, 20, 0, time.Second}, ""},
		{"rate not a number", map[string]string{"API_RATE_LIMIT": "fast"}, [4]any{}, `API_RATE_LIMIT: "fast"`},
		{"rate NaN", map[string]string{"API_RATE_LIMIT": "NaN"}, [4]any{}, `API_RATE_LIMIT: "NaN"`},
		{"rate negative", map[string]string{"API_RATE_LIMIT": "-1"}, [4]any{}, `API_RATE_LIMIT: "-1" is not in range; it must be a number of at least 0`},
		{"burst zero", map[string]string{"API_RATE_BURST": "0"}, [4]any{}, `API_RATE_BURST: "0" is not in range; it must be a whole number from 1 to 100000`},
		{"burst not a number", map[string]string{"API_RATE_BURST": "1.5"}, [4]any{}, `API_RATE_BURST: "1.5"`},
		{"max prompts negative", map[string]string{"PHONE_MAX_PROMPTS": "-1"}, [4]any{}, `PHONE_MAX_PROMPTS: "-1" is not in range; it must be a whole number from 0 to 1000`},
		{"max prompts not a number", map[string]string{"PHONE_MAX_PROMPTS": "five"}, [4]any{}, `PHONE_MAX_PROMPTS: "five"`},
		{"window too short", map[string]string{"PHONE_WINDOW": "30s"}, [4]any{}, `PHONE_WINDOW: "30s" is not in range; it must be a duration from 1m to 168h`},
		{"window not a duration", map[string]string{"PHONE_WINDOW": "1 hour"}, [4]any{}, `PHONE_WINDOW: "1 hour"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := baseEnv()
			for k, v := range tc.set {
				e[k] = v
			}
			c, err := ConfigFromEnv(env(e))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := [4]any{c.RateLimit, c.RateBurst, c.PhoneMaxPrompts, c.PhoneWindow}; got != tc.want {
				t.Errorf("limits %v, want %v", got, tc.want)
			}
		})
	}
}

func TestClientMaxQueuedFromEnv(t *testing.T) {
	t.Parallel()
	// The default leaves the dispatcher's MaxAckPending room for nine
	// clients at their caps and the overshoot (docs/OPERATIONS.md: Abuse limits).
	if m := events.DispatcherConsumer().MaxAckPending; 9*DefaultClientMaxQueued >= m || maxClientMaxQueued != m {
		t.Errorf("API_CLIENT_MAX_QUEUED default %d, most %d: MaxAckPending %d does not hold nine clients at their caps",
			DefaultClientMaxQueued, maxClientMaxQueued, m)
	}
	for _, tc := range []struct {
		set  string
		want int
	}{{"", DefaultClientMaxQueued}, {"0", 0}, {" 40 ", 40}, {"10000", 10000}} {
		e := baseEnv()
		e["API_CLIENT_MAX_QUEUED"] = tc.set
		c, err := ConfigFromEnv(env(e))
		if err != nil {
			t.Fatalf("%q: %v", tc.set, err)
		}
		if c.ClientMaxQueued != tc.want {
			t.Errorf("API_CLIENT_MAX_QUEUED=%q: %d, want %d", tc.set, c.ClientMaxQueued, tc.want)
		}
	}
}

func TestClientLimits(t *testing.T) {
	t.Parallel()
	l := newClientLimits(2, 3) // 2/s, bursts of 3: refilled in 1.5s
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		if ok, _ := l.take("acme", now); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.take("acme", now)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("over the burst: %v, wait %s; want refused for 500ms", ok, wait)
	}
	// A refusal takes no token: the next one is there after the wait.
	if ok, _ := l.take("acme", now.Add(500*time.Millisecond)); !ok {
		t.Fatal("refused after the wait")
	}
	if ok, _ := l.take("globex", now); !ok {
		t.Fatal("another client refused")
	}
	// Buckets idle for longer than their refill are dropped (a new one is
	// full, the same as theirs), those in use are kept.
	later := now.Add(sweepInterval + time.Second)
	l.take("initech", later)
	if got := l.size(); got != 1 {
		t.Errorf("%d buckets after the idle ones were swept, want 1", got)
	}
	if newClientLimits(0, 10) != nil {
		t.Error("a rate of 0 limits")
	}
	if got := retrySeconds(500 * time.Millisecond); got != 1 {
		t.Errorf("retrySeconds(500ms) = %d", got)
	}
	if got := retrySeconds(2001 * time.Millisecond); got != 3 {
		t.Errorf("retrySeconds(2.001s) = %d", got)
	}
}

// phoneBody is a valid request for phone (07XXXXXXXX) with reference ref.
func phoneBody(phone, ref string) string {
	return fmt.Sprintf(`{"phone":%q,"amount":100,"reference":%q}`, phone, ref)
}

func TestClientRateLimit(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.RateLimit, o.RateBurst = 0.01, 3 })
	for i := range 3 {
		if r := e.post(t, acmeToken, phoneBody("0712000100", fmt.Sprint("R", i))); r.status != http.StatusAccepted {
			t.Fatalf("request %d: %d %s", i+1, r.status, r.raw)
		}
	}
	// Both routes share the client's bucket.
	for _, r := range []response{
		e.post(t, acmeToken, phoneBody("0712000100", "R4")),
		e.get(t, acmeToken, "0190a0b1-7c4e-7b8a-9c1d-2e3f4a5b6c7d"),
	} {
		if r.status != http.StatusTooManyRequests || r.body["success"] != false || r.body["message"] != MsgRateLimited {
			t.Fatalf("over the limit: %d %s", r.status, r.raw)
		}
		// 1 request per 100s: the next token is 100s away (99 when a
		// second passed since the burst, on a loaded machine).
		if ra := r.header.Get("Retry-After"); ra != "100" && ra != "99" {
			t.Errorf("Retry-After %q, want 100", ra)
		}
	}
	if n := e.streamMsgs(t); n != 3 {
		t.Errorf("stream holds %d requests, want the 3 allowed", n)
	}
	// Another client has its own bucket.
	if r := e.post(t, globexToken, phoneBody("0712000101", "G1")); r.status != http.StatusAccepted {
		t.Fatalf("another client: %d %s", r.status, r.raw)
	}
	// Unauthenticated requests never reach the limiter (nor make buckets).
	if r := e.post(t, "no-such-token", validBody); r.status != http.StatusUnauthorized {
		t.Fatalf("bad token: %d", r.status)
	}
	if got := e.h.clientLimits.size(); got != 2 {
		t.Errorf("%d buckets, want 2 (acme, globex)", got)
	}
}

func TestPhoneLimit(t *testing.T) {
	t.Parallel()
	const limit = 3
	e := newTestEnv(t, func(o *Options) { o.PhoneMaxPrompts, o.PhoneWindow = limit, time.Hour })
	const flooded, other = "0712000200", "0712000201"

	// The limit is per phone across clients.
	tokens := []string{acmeToken, globexToken, acmeToken}
	var ids []string
	for i := range limit {
		ids = append(ids, accepted(t, e.post(t, tokens[i], phoneBody(flooded, fmt.Sprint("F", i)))))
	}
	r := e.post(t, globexToken, phoneBody(flooded, "F-over"))
	if r.status != http.StatusTooManyRequests || r.body["success"] != false {
		t.Fatalf("request %d for the phone: %d %s", limit+1, r.status, r.raw)
	}
	msg, _ := r.body["message"].(string)
	if msg != MsgPhoneLimited {
		t.Errorf("message %q, want %q", msg, MsgPhoneLimited)
	}
	if ra := r.header.Get("Retry-After"); ra != "3600" {
		t.Errorf("Retry-After %q, want 3600 (the window, whatever the prompts in it)", ra)
	}
	if n := e.streamMsgs(t); n != limit {
		t.Errorf("stream holds %d requests, want %d", n, limit)
	}
	if strings.Contains(e.logs.String(), "254712000200") {
		t.Error("the phone is logged unmasked")
	}
	// Other phones are not affected.
	accepted(t, e.post(t, acmeToken, phoneBody(other, "O1")))

	// Once the oldest prompt has left the window, one more passes.
	e.db.MustExec(`UPDATE phone_prompts SET created_at = now() - interval '61 minutes' WHERE tracking_id = $1`, ids[0])
	accepted(t, e.post(t, acmeToken, phoneBody(flooded, "F-later")))
	if r := e.post(t, acmeToken, phoneBody(flooded, "F-over2")); r.status != http.StatusTooManyRequests {
		t.Fatalf("over the limit again: %d %s", r.status, r.raw)
	}
}

// The 429 of a phone at its limit says nothing of the prompts that filled
// it: not how many, not when, not whose. Answers for phones filled by the
// client itself, by others, long ago or just now, are the same.
func TestPhoneLimitRevealsNoPrompts(t *testing.T) {
	t.Parallel()
	const limit = 2
	e := newTestEnv(t, func(o *Options) { o.PhoneMaxPrompts, o.PhoneWindow = limit, time.Hour })
	tests := []struct {
		name    string
		phone   string
		fillers []string // the clients whose requests fill the phone's limit
		age     string   // how long ago they were made
	}{
		{"its own, just now", "0712000500", []string{acmeToken, acmeToken}, "0 minutes"},
		{"another's, just now", "0712000501", []string{globexToken, globexToken}, "0 minutes"},
		{"another's, 50 minutes ago", "0712000502", []string{globexToken, globexToken}, "50 minutes"},
		{"both, 59 minutes ago", "0712000503", []string{globexToken, acmeToken}, "59 minutes"},
	}
	var first *response
	for _, tc := range tests {
		var ids []string
		for i, token := range tc.fillers {
			ids = append(ids, accepted(t, e.post(t, token, phoneBody(tc.phone, fmt.Sprint("P", i)))))
		}
		for _, id := range ids {
			e.db.MustExec(`UPDATE phone_prompts SET created_at = now() - $2::interval WHERE tracking_id = $1`, id, tc.age)
		}
		r := e.post(t, acmeToken, phoneBody(tc.phone, "over"))
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("%s: %d %s", tc.name, r.status, r.raw)
		}
		if first == nil {
			first = &r
			continue
		}
		if r.raw != first.raw || r.header.Get("Retry-After") != first.header.Get("Retry-After") {
			t.Errorf("%s: 429 %s with Retry-After %q; %s: %s with %q: the answer tells the prompts apart",
				tc.name, r.raw, r.header.Get("Retry-After"), tests[0].name, first.raw, first.header.Get("Retry-After"))
		}
	}
}

// A replay of an Idempotency-Key is neither counted nor refused; a request
// refused at the limit leaves its key free for a retry later.
func TestPhoneLimitAndIdempotency(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.PhoneMaxPrompts, o.PhoneWindow = 2, time.Hour })
	const phone = "0712000300"
	first := accepted(t, e.postKey(t, acmeToken, "order-1", phoneBody(phone, "A")))
	for range 3 {
		r := e.postKey(t, acmeToken, "order-1", phoneBody(phone, "A"))
		if got := accepted(t, r); got != first || r.header.Get(ReplayedHeader) != "true" {
			t.Fatalf("replay answered %s (replayed %q), want %s", got, r.header.Get(ReplayedHeader), first)
		}
	}
	accepted(t, e.postKey(t, acmeToken, "order-2", phoneBody(phone, "B")))
	// Now at the limit, replays are still answered.
	if got := accepted(t, e.postKey(t, acmeToken, "order-1", phoneBody(phone, "A"))); got != first {
		t.Fatalf("replay at the limit answered %s", got)
	}
	r := e.postKey(t, acmeToken, "order-3", phoneBody(phone, "C"))
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("third request: %d %s", r.status, r.raw)
	}
	if row, ok := e.keyRow(t, "acme", "order-3"); ok {
		t.Fatalf("the refused request's key is held: %+v", row)
	}
	var n int
	if err := e.db.Get(&n, `SELECT count(*) FROM phone_prompts`); err != nil || n != 2 {
		t.Fatalf("%d prompts counted, %v; want 2", n, err)
	}
	// After the window, the same key goes through.
	e.db.MustExec(`UPDATE phone_prompts SET created_at = now() - interval '2 hours'`)
	accepted(t, e.postKey(t, acmeToken, "order-3", phoneBody(phone, "C")))
}

// A request that ends in 503 with nothing published gives its slot back;
// one whose publish may have been stored keeps it.
func TestPhoneLimitNotPublished(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.PhoneMaxPrompts, o.PhoneWindow = 1, time.Hour })
	ctx := context.Background()
	const phone = "0712000400"
	if err := e.ns.JS.DeleteStream(ctx, events.StreamName); err != nil {
		t.Fatal(err)
	}
	// JetStream answers "no responders" for the deleted stream: nothing
	// was stored. On a loaded machine that answer may not come before the
	// publish's deadline; the outcome is then unknown, the answer says so,
	// and the slot is kept, as for any publish that may have been stored.
	unknown := 0
	for _, key := range []string{"", "k"} {
		req := newRequest(http.MethodPost, PushPath, acmeToken, ctJSON, phoneBody(phone, "N"))
		if key != "" {
			req.Header.Set(IdempotencyHeader, key)
		}
		r := e.do(t, req)
		switch {
		case r.status == http.StatusServiceUnavailable && r.body["message"] == MsgUnavailable:
		case r.status == http.StatusServiceUnavailable && (r.body["message"] == MsgUnknownOutcome && key == "" || r.body["message"] == MsgUnconfirmed && key != ""):
			unknown++
		case r.status == http.StatusTooManyRequests && r.body["message"] == MsgPhoneLimited && unknown > 0:
			// The first request's outcome was unknown: it holds the
			// phone's one slot.
		default:
			t.Fatalf("key %q: %d %s", key, r.status, r.raw)
		}
	}
	var n int
	if err := e.db.Get(&n, `SELECT count(*) FROM phone_prompts`); err != nil || n != unknown {
		t.Fatalf("%d slots kept, want %d (those of publishes whose outcome is unknown), %v", n, unknown, err)
	}
	if unknown > 0 {
		return // the phone's one slot is held: nothing more can be accepted
	}
	if _, err := events.EnsureStream(ctx, e.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	accepted(t, e.post(t, acmeToken, phoneBody(phone, "N")))
}

// Requests for one phone at once, from several clients: exactly the limit
// is accepted, the rest are 429.
func TestPhoneLimitConcurrent(t *testing.T) {
	t.Parallel()
	const limit, requests = 4, 24
	e := newTestEnv(t, func(o *Options) { o.PhoneMaxPrompts, o.PhoneWindow = limit, time.Hour })
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		codes    = map[int]int{}
		mayHave  int // 503s that do not say nothing was sent
		messages = map[string]int{}
	)
	for i := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			token := acmeToken
			if i%2 == 1 {
				token = globexToken
			}
			req := newRequest(http.MethodPost, PushPath, token, ctJSON, phoneBody("0712000500", fmt.Sprint("C", i)))
			w := httptest.NewRecorder()
			e.srv.ServeHTTP(w, req)
			mu.Lock()
			defer mu.Unlock()
			codes[w.Code]++
			if w.Code == http.StatusServiceUnavailable {
				var body struct{ Message string }
				_ = json.Unmarshal(w.Body.Bytes(), &body)
				messages[body.Message]++
				if body.Message != MsgUnavailable {
					mayHave++
				}
			}
		}()
	}
	wg.Wait()
	stored := int(e.streamMsgs(t))
	t.Logf("answers %v; 503s: %v; stream holds %d", codes, messages, stored)
	// The limit holds whatever the machine's load: never more published
	// than the phone's limit, nothing published beyond what the answers
	// allow, and, when nothing was refused for want of time (a 503, on a
	// loaded machine), exactly the limit accepted.
	if stored > limit {
		t.Errorf("stream holds %d requests, over the phone's limit of %d", stored, limit)
	}
	if stored < codes[http.StatusAccepted] || stored > codes[http.StatusAccepted]+mayHave {
		t.Errorf("stream holds %d requests, %d accepted and %d answers that may have been: %v", stored, codes[http.StatusAccepted], mayHave, messages)
	}
	if codes[http.StatusServiceUnavailable] == 0 &&
		(codes[http.StatusAccepted] != limit || codes[http.StatusTooManyRequests] != requests-limit) {
		t.Errorf("answers %v, want %d accepted and %d refused", codes, limit, requests-limit)
	}
}
