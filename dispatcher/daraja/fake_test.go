package daraja_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// fakeEnv is the fake Daraja, a callback receiver and a client for it.
type fakeEnv struct {
	fake      *darajatest.Server
	client    *daraja.Client
	callbacks atomic.Int64
	cbURL     string
}

func newFakeEnv(t *testing.T, o darajatest.Options, change func(*daraja.Config)) *fakeEnv {
	t.Helper()
	fake, err := darajatest.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	env := &fakeEnv{fake: fake}
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		env.callbacks.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ResultCode":0,"ResultDesc":"Accepted"}`))
	}))
	t.Cleanup(rc.Close)
	env.cbURL = rc.URL + "/hooks/stk-push/"
	cfg := daraja.Config{
		BaseURL:        fake.URL(),
		ConsumerKey:    darajatest.DefaultConsumerKey,
		ConsumerSecret: darajatest.DefaultConsumerSecret,
		ShortCode:      darajatest.DefaultShortCode,
		PassKey:        darajatest.DefaultPassKey,
		Timeout:        5 * time.Second,
	}
	if change != nil {
		change(&cfg)
	}
	env.client = newClient(t, cfg)
	return env
}

func (e *fakeEnv) push(phone, id string) daraja.PushRequest {
	return daraja.PushRequest{Phone: phone, Amount: 10, AccountReference: "REF-" + id, CallbackURL: e.cbURL + id}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestAgainstFakeLifecycle: push, the open prompt as the query sees it, the
// callback, the final query.
func TestAgainstFakeLifecycle(t *testing.T) {
	env := newFakeEnv(t, darajatest.Options{CallbackDelay: time.Hour}, nil)
	ctx := testCtx(t)
	resp, err := env.client.Push(ctx, env.push("254712341032", "t1"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.CheckoutRequestID, "ws_CO_") || resp.MerchantRequestID == "" || resp.ResponseCode != "0" {
		t.Fatalf("PushResponse %+v", resp)
	}
	// The fake alternates the two "still open" answers; both read the same.
	for range 2 {
		_, err := env.client.Query(ctx, resp.CheckoutRequestID)
		if !errors.Is(err, daraja.ErrStillProcessing) || daraja.KindOf(err) != daraja.KindTransient {
			t.Fatalf("open transaction: %v", err)
		}
	}
	// A second push to the phone meets the lock.
	_, err = env.client.Push(ctx, env.push("254712341032", "t2"))
	if e := asError(t, err); e.Kind != daraja.KindLocked || e.RetryAfter < time.Minute {
		t.Errorf("second push: %v (retry after %v)", err, e.RetryAfter)
	}

	env.fake.Flush()
	if err := env.fake.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := env.callbacks.Load(); n != 1 {
		t.Errorf("%d callbacks, want 1", n)
	}
	res, err := env.client.Query(ctx, resp.CheckoutRequestID)
	if err != nil || res.ResultCode != "1032" || res.CheckoutRequestID != resp.CheckoutRequestID || res.MerchantRequestID != resp.MerchantRequestID {
		t.Errorf("final query: %+v, %v", res, err)
	}
	if _, err := env.client.Query(ctx, "ws_CO_unknown"); !errors.Is(err, daraja.ErrUnknownTransaction) {
		t.Errorf("unknown id: %v", err)
	}
	if n := len(env.fake.AcceptedPushes(darajatest.WithCallbackURL(env.cbURL + "t1"))); n != 1 {
		t.Errorf("%d accepted pushes for t1", n)
	}
}

// TestAgainstFakeFailures: each failure the fake scripts reads as the kind
// the dispatcher must act on, and what reached the customer is recorded.
func TestAgainstFakeFailures(t *testing.T) {
	tests := []struct {
		name     string
		fail     []darajatest.Failure
		kind     daraja.Kind // -1: success
		code     string
		calls    int // push calls the fake received
		accepted int // of which processed (the customer was prompted)
	}{
		{"spike arrest", []darajatest.Failure{darajatest.FailSpikeArrest}, daraja.KindTransient, "500.003.02", 1, 0},
		{"quota", []darajatest.Failure{darajatest.FailQuota}, daraja.KindTransient, "500.003.03", 1, 0},
		{"503 page", []darajatest.Failure{darajatest.FailServiceUnavailable}, daraja.KindTransient, "http.503", 1, 0},
		{"503 page after accepting", []darajatest.Failure{darajatest.FailServiceUnavailableAfterAccept}, daraja.KindTransient, "http.503", 1, 1},
		{"proxy 404 page", []darajatest.Failure{darajatest.FailHTML404}, daraja.KindRefused, "http.404", 1, 0},
		{"firewall 403 page", []darajatest.Failure{darajatest.FailHTML403}, daraja.KindRefused, "http.403", 1, 0},
		{"401 without body once", []darajatest.Failure{darajatest.FailUnauthorizedEmpty}, -1, "", 2, 1},
		{"401 without body twice", []darajatest.Failure{darajatest.FailUnauthorizedEmpty, darajatest.FailUnauthorizedEmpty}, daraja.KindTransient, "http.401", 2, 0},
		{"NUL in errorMessage", []darajatest.Failure{darajatest.FailNULMessage}, daraja.KindRefused, "400.002.02", 1, 0},
		{"429 fault", []darajatest.Failure{darajatest.FailTooManyRequests}, daraja.KindTransient, "policies.ratelimit.SpikeArrestViolation", 1, 0},
		{"internal error", []darajatest.Failure{darajatest.FailInternal500_003_1001}, daraja.KindAmbiguous, "500.003.1001", 1, 0},
		{"internal error after accepting", []darajatest.Failure{darajatest.FailInternalAfterAccept}, daraja.KindAmbiguous, "500.003.1001", 1, 1},
		{"invalid token once", []darajatest.Failure{darajatest.FailInvalidToken}, -1, "", 2, 1},
		{"invalid token twice", []darajatest.Failure{darajatest.FailInvalidToken, darajatest.FailInvalidToken}, daraja.KindTransient, "404.001.03", 2, 0},
		{"timeout", []darajatest.Failure{darajatest.FailTimeout}, daraja.KindAmbiguous, daraja.CodeTimeout, 1, 0},
		{"timeout after accepting", []darajatest.Failure{darajatest.FailTimeoutAfterAccept}, daraja.KindAmbiguous, daraja.CodeTimeout, 1, 1},
		{"reset after reading", []darajatest.Failure{darajatest.FailResetAfterRead}, daraja.KindAmbiguous, daraja.CodeConnectionLost, 1, 0},
		{"reset after accepting", []darajatest.Failure{darajatest.FailResetAfterAccept}, daraja.KindAmbiguous, daraja.CodeConnectionLost, 1, 1},
		{"invalid phone", []darajatest.Failure{darajatest.FailInvalidPhone}, daraja.KindRefused, "400.002.02", 1, 0},
		{"merchant does not exist", []darajatest.Failure{darajatest.FailMerchantNotExist}, daraja.KindRefused, "500.001.1001", 1, 0},
		{"wrong credentials", []darajatest.Failure{darajatest.FailWrongCredentials}, daraja.KindRefused, "500.001.1001", 1, 0},
		{"locked", []darajatest.Failure{darajatest.FailLocked}, daraja.KindLocked, "500.001.1001", 1, 0},
	}
	// Only a held answer waits out the client's timeout, shortened for it:
	// the other cases keep the default, since on a loaded machine (a CI
	// run at load average 20) a 401's two calls took over 300 ms.
	others := newFakeEnv(t, darajatest.Options{CallbackDelay: time.Hour}, nil)
	held := newFakeEnv(t, darajatest.Options{CallbackDelay: time.Hour}, func(c *daraja.Config) { c.Timeout = 300 * time.Millisecond })
	// held's token is fetched before the cases, tried until it is (the
	// timeout bounds the token's call too): a case's calls are its pushes.
	wait.For(t, "a token for the client with the short timeout", func() bool {
		_, err := held.client.Push(testCtx(t), held.push("254799000999", "warm"))
		return err == nil
	})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := others
			if tt.code == daraja.CodeTimeout {
				env = held
			}
			ctx := testCtx(t)
			phone := "2547990000" + string(rune('0'+i/10)) + string(rune('0'+i%10))
			env.fake.Script(phone, darajatest.Script{FailFirst: tt.fail})
			_, err := env.client.Push(ctx, env.push(phone, phone[8:]))
			if tt.kind == -1 {
				if err != nil {
					t.Fatalf("Push: %v", err)
				}
			} else {
				e := asError(t, err)
				if e.Kind != tt.kind || e.Code != tt.code {
					t.Errorf("error %v: kind %v code %q, want %v %q", err, e.Kind, e.Code, tt.kind, tt.code)
				}
				if e.Uncertain != (e.HTTPStatus == 503) {
					t.Errorf("error %v: Uncertain %v", err, e.Uncertain)
				}
				checkTidy(t, e)
			}
			// A held or reset request is recorded when its handler ends.
			phonePushes := func() []darajatest.Push {
				var out []darajatest.Push
				for _, p := range env.fake.Pushes() {
					if p.Body.PhoneNumber == phone {
						out = append(out, p)
					}
				}
				return out
			}
			if err := env.fake.WaitFor(ctx, func() bool { return len(phonePushes()) >= tt.calls }); err != nil {
				t.Fatal(err)
			}
			if n := len(phonePushes()); n != tt.calls {
				t.Errorf("%d push calls, want %d", n, tt.calls)
			}
			if n := len(env.fake.AcceptedPushes(darajatest.WithPhone(phone))); n != tt.accepted {
				t.Errorf("%d pushes reached the customer, want %d", n, tt.accepted)
			}
		})
	}
}

// TestAgainstFakeExpiredToken: Daraja forgetting the token costs one
// refused call and one refresh, invisible to the caller.
func TestAgainstFakeExpiredToken(t *testing.T) {
	env := newFakeEnv(t, darajatest.Options{CallbackDelay: time.Hour}, nil)
	ctx := testCtx(t)
	if _, err := env.client.Push(ctx, env.push("254712000001", "a")); err != nil {
		t.Fatal(err)
	}
	env.fake.ExpireTokens()
	if _, err := env.client.Push(ctx, env.push("254712000002", "b")); err != nil {
		t.Fatal(err)
	}
	var refused int
	for _, p := range env.fake.Pushes() {
		if p.ErrorCode == "404.001.03" {
			refused++
			if p.Body.PhoneNumber != "254712000002" || p.Accepted {
				t.Errorf("push refused for its token recorded as %+v", p)
			}
		}
	}
	if refused != 1 || len(env.fake.AcceptedPushes()) != 2 {
		t.Errorf("%d refused for the token, %d accepted; want 1 and 2", refused, len(env.fake.AcceptedPushes()))
	}
}

func TestAgainstFakeConfigurationErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(*daraja.Config)
		code   string
		msg    string
	}{
		{"wrong consumer secret", func(c *daraja.Config) { c.ConsumerSecret = "wrong" }, "400.008.01", "Invalid Authentication"},
		{"wrong passkey", func(c *daraja.Config) { c.PassKey = "wrong" }, "500.001.1001", "Wrong credentials"},
		{"wrong shortcode", func(c *daraja.Config) { c.ShortCode = "600000" }, "500.001.1001", "Merchant does not exist"},
		{"clock off by ten minutes", func(c *daraja.Config) { c.Now = func() time.Time { return time.Now().Add(10 * time.Minute) } },
			"400.002.02", "Invalid Timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newFakeEnv(t, darajatest.Options{CallbackDelay: time.Hour}, tt.change)
			_, err := env.client.Push(testCtx(t), env.push("254712000001", "x"))
			e := asError(t, err)
			if e.Kind != daraja.KindRefused || e.Code != tt.code || !strings.Contains(e.Message, tt.msg) {
				t.Errorf("error %v: want refused %s %q", err, tt.code, tt.msg)
			}
			noSecrets(t, err.Error(), "wrong")
			if n := len(env.fake.AcceptedPushes()); n != 0 {
				t.Errorf("%d pushes accepted", n)
			}
		})
	}
}

// TestAgainstFakeOAuthFaults: a push that cannot get its token carries the
// token answer's status as its code, is never Uncertain, and sends nothing.
func TestAgainstFakeOAuthFaults(t *testing.T) {
	for i, tt := range []struct {
		kind     string
		wantKind daraja.Kind
		code     string
	}{
		{darajatest.OAuthEmpty400, daraja.KindRefused, "http.400"},
		{darajatest.OAuthHTML403, daraja.KindRefused, "http.403"},
		{darajatest.OAuthServiceUnavailable, daraja.KindTransient, "http.503"},
	} {
		t.Run(tt.kind, func(t *testing.T) {
			env := newFakeEnv(t, darajatest.Options{CallbackDelay: time.Hour}, nil)
			env.fake.FailOAuth(1, tt.kind)
			phone := "25479900010" + string(rune('0'+i))
			_, err := env.client.Push(testCtx(t), env.push(phone, "oauth"))
			e := asError(t, err)
			if e.Kind != tt.wantKind || e.Code != tt.code || e.Uncertain || !strings.Contains(e.Message, "access token") {
				t.Errorf("error %v: kind %v code %q uncertain %v, want %v %q", err, e.Kind, e.Code, e.Uncertain, tt.wantKind, tt.code)
			}
			checkTidy(t, e)
			if n := len(env.fake.Pushes()); n != 0 || env.fake.TokenRequests() != 1 {
				t.Errorf("%d pushes, %d token requests; want 0, 1", n, env.fake.TokenRequests())
			}
			if _, err := env.client.Push(testCtx(t), env.push(phone, "oauth")); err != nil {
				t.Errorf("push once the token endpoint is back: %v", err)
			}
		})
	}
}
