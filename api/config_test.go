package api

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/stkgate/stkgate/events/kit/tracing"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func baseEnv() map[string]string {
	return map[string]string{
		"API_TOKENS":   "acme:acme-secret-token-1-padded-to-32-bytes,globex:globex-secret-token-2-padded-to-32-bytes",
		"DATABASE_URL": "postgres://stk:pg-password@db:5432/stkgate?sslmode=disable",
		"NATS_URL":     "nats://nats:4222",
	}
}

func TestConfigFromEnvDefaults(t *testing.T) {
	t.Parallel()
	got, err := ConfigFromEnv(env(baseEnv()))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Addr: ":8080",
		Tokens: []ClientToken{
			{Client: "acme", Token: "acme-secret-token-1-padded-to-32-bytes"},
			{Client: "globex", Token: "globex-secret-token-2-padded-to-32-bytes"},
		},
		DatabaseURL:    "postgres://stk:pg-password@db:5432/stkgate?sslmode=disable",
		NATSURL:        "nats://nats:4222",
		StreamReplicas: 1,
		DispatchMode:   ModeAsync,
		SyncTimeout:    30 * time.Second,
		IdempotencyTTL: 24 * time.Hour,

		RateLimit: 10, RateBurst: 20, PhoneMaxPrompts: 5, PhoneWindow: time.Hour,
		AuthFailLimit: 1, AuthFailBurst: 20,
		ClientMaxQueued: 1000,
		Tracing:         tracing.Config{ServiceName: "api", Sampler: tracing.SamplerParentBasedAlwaysOn, SamplerArg: 1},
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Config{}, "Logger")); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestConfigFromEnvSettings(t *testing.T) {
	t.Parallel()
	e := baseEnv()
	e["API_ADDR"] = "127.0.0.1:9000"
	e["API_TOKENS"] = " dev : dev-token-long-enough-for-production , ops:ops:token:with:colons:and:32-bytes,dev:rotated-token-long-enough-for-production, "
	e["NATS_URL"] = "nats://a:4222, nats://b:4222"
	e["NATS_STREAM_REPLICAS"] = "3"
	e["DISPATCH_MODE"] = "SYNC"
	e["SYNC_TIMEOUT"] = "2500ms"
	e["IDEMPOTENCY_TTL"] = "48h"
	e["API_AUTH_FAIL_LIMIT"] = "0.5"
	e["API_AUTH_FAIL_BURST"] = "5"
	e["API_TRUSTED_PROXIES"] = " 10.1.0.0/16, 192.0.2.7 ,2001:db8::/32"
	e["WEBHOOK_DEV_MODE"] = "true"
	got, err := ConfigFromEnv(env(e))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Addr: "127.0.0.1:9000",
		Tokens: []ClientToken{
			{Client: "dev", Token: "dev-token-long-enough-for-production"},
			{Client: "ops", Token: "ops:token:with:colons:and:32-bytes"},
			{Client: "dev", Token: "rotated-token-long-enough-for-production"},
		},
		DatabaseURL:    e["DATABASE_URL"],
		NATSURL:        "nats://a:4222, nats://b:4222",
		StreamReplicas: 3,
		DispatchMode:   ModeSync,
		SyncTimeout:    2500 * time.Millisecond,
		IdempotencyTTL: 48 * time.Hour,

		RateLimit: 10, RateBurst: 20, PhoneMaxPrompts: 5, PhoneWindow: time.Hour,
		AuthFailLimit: 0.5, AuthFailBurst: 5,
		TrustedProxies:  []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32")},
		WebhookDevMode:  true,
		ClientMaxQueued: 1000,
		Tracing:         tracing.Config{ServiceName: "api", Sampler: tracing.SamplerParentBasedAlwaysOn, SamplerArg: 1},
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Config{}, "Logger"), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestConfigFromEnvErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		set  map[string]string
		want []string // each must appear in the error
	}{
		{"tokens only commas", map[string]string{"API_TOKENS": " , ,"}, []string{"API_TOKENS: no name:token entry"}},
		{"token without name", map[string]string{"API_TOKENS": "acme:t1,:t2"}, []string{"API_TOKENS: entry 2 is not name:token"}},
		{"name without token", map[string]string{"API_TOKENS": "acme:"}, []string{"API_TOKENS: entry 1 is not name:token"}},
		{"no colon", map[string]string{"API_TOKENS": "acme-secret"}, []string{"API_TOKENS: entry 1 is not name:token"}},
		{"webhook dev mode not a bool", map[string]string{"WEBHOOK_DEV_MODE": "yes please"}, []string{"WEBHOOK_DEV_MODE"}},
		{"bad client name", map[string]string{"API_TOKENS": "ac me:t1"}, []string{`client name "ac me"`}},
		{"token with space", map[string]string{"API_TOKENS": "acme:sec ret"}, []string{"API_TOKENS: entry 1 (client acme): the token is empty or has white space"}},
		{"short token", map[string]string{"API_TOKENS": "acme:0123456789abcdef0123456789abcde"},
			[]string{"API_TOKENS: entry 1 (client acme): the token is 31 bytes long, not at least 32"}},
		{"short second token", map[string]string{"API_TOKENS": "acme:acme-secret-token-1-padded-to-32-bytes,globex:t2"},
			[]string{"API_TOKENS: entry 2 (client globex): the token is 2 bytes long"}},
		{"dev-token", map[string]string{"API_TOKENS": "dev:dev-token"}, []string{"API_TOKENS: entry 1 (client dev): the token is 9 bytes long"}},
		{"shared token", map[string]string{"API_TOKENS": "acme:same-token-0123456789abcdef0123456789,globex:same-token-0123456789abcdef0123456789"}, []string{"API_TOKENS: entry 2 (client globex): the same token is given to acme"}},
		{"database missing", map[string]string{"DATABASE_URL": ""}, []string{"DATABASE_URL: required"}},
		{"nats missing", map[string]string{"NATS_URL": " "}, []string{"NATS_URL: required"}},
		{"nats not a URL", map[string]string{"NATS_URL": "localhost"}, []string{"NATS_URL:"}},
		{"nats scheme", map[string]string{"NATS_URL": "http://nats:4222"}, []string{`NATS_URL: scheme "http"`}},
		{"replicas not a number", map[string]string{"NATS_STREAM_REPLICAS": "three"}, []string{`NATS_STREAM_REPLICAS: "three" is not a whole number`}},
		{"replicas too many", map[string]string{"NATS_STREAM_REPLICAS": "7"}, []string{`NATS_STREAM_REPLICAS: "7" is not in range; it must be a whole number from 1 to 5`}},
		{"replicas zero", map[string]string{"NATS_STREAM_REPLICAS": "0"}, []string{`NATS_STREAM_REPLICAS: "0" is not in range`}},
		{"max queued not a number", map[string]string{"API_CLIENT_MAX_QUEUED": "lots"}, []string{`API_CLIENT_MAX_QUEUED: "lots" is not a whole number`}},
		{"max queued negative", map[string]string{"API_CLIENT_MAX_QUEUED": "-1"}, []string{`API_CLIENT_MAX_QUEUED: "-1" is not in range; it must be a whole number from 0 to 10000`}},
		{"max queued beyond MaxAckPending", map[string]string{"API_CLIENT_MAX_QUEUED": "10001"}, []string{`API_CLIENT_MAX_QUEUED: "10001" is not in range; it must be a whole number from 0 to 10000`}},
		{"mode", map[string]string{"DISPATCH_MODE": "eventually"}, []string{`DISPATCH_MODE: "eventually" is not a choice offered; it must be async or sync`}},
		{"sync timeout not a duration", map[string]string{"SYNC_TIMEOUT": "30"}, []string{`SYNC_TIMEOUT: "30" is not a duration; it must be a duration above 0 and at most 5m`}},
		{"sync timeout zero", map[string]string{"SYNC_TIMEOUT": "0s"}, []string{`SYNC_TIMEOUT: "0s" is not in range`}},
		{"sync timeout negative", map[string]string{"SYNC_TIMEOUT": "-1s"}, []string{`SYNC_TIMEOUT: "-1s" is not in range`}},
		{"sync timeout too long", map[string]string{"SYNC_TIMEOUT": "1h"}, []string{`SYNC_TIMEOUT: "1h" is not in range`}},
		{"idempotency TTL not a duration", map[string]string{"IDEMPOTENCY_TTL": "1d"}, []string{`IDEMPOTENCY_TTL: "1d"`}},
		{"idempotency TTL too short", map[string]string{"IDEMPOTENCY_TTL": "30s"}, []string{`IDEMPOTENCY_TTL: "30s" is not in range; it must be a duration from 1m to`}},
		{"idempotency TTL too long", map[string]string{"IDEMPOTENCY_TTL": "1000h"}, []string{`IDEMPOTENCY_TTL: "1000h" is not in range`}},
		{"auth fail limit not a number", map[string]string{"API_AUTH_FAIL_LIMIT": "some"}, []string{`API_AUTH_FAIL_LIMIT: "some"`}},
		{"auth fail limit negative", map[string]string{"API_AUTH_FAIL_LIMIT": "-1"}, []string{`API_AUTH_FAIL_LIMIT: "-1" is not in range; it must be a number of at least 0`}},
		{"auth fail burst zero", map[string]string{"API_AUTH_FAIL_BURST": "0"}, []string{`API_AUTH_FAIL_BURST: "0" is not in range; it must be a whole number from 1 to 100000`}},
		{"auth fail burst not a number", map[string]string{"API_AUTH_FAIL_BURST": "2.5"}, []string{`API_AUTH_FAIL_BURST: "2.5"`}},
		{"trusted proxy not a CIDR", map[string]string{"API_TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"}, []string{`API_TRUSTED_PROXIES: "proxy.local"`}},
		{"trusted proxy host bits", map[string]string{"API_TRUSTED_PROXIES": "10.0.0.1/8"}, []string{"API_TRUSTED_PROXIES: \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?"}},
		{"addr", map[string]string{"API_ADDR": "8080"}, []string{`API_ADDR: "8080" is not host:port`}},
		{"addr port", map[string]string{"API_ADDR": ":http-alt"}, []string{`API_ADDR: ":http-alt" is not an address with a valid port`}},
		{"everything at once", map[string]string{"API_TOKENS": ":", "DATABASE_URL": "", "NATS_URL": ""},
			[]string{"API_TOKENS: entry 1", "DATABASE_URL: required", "NATS_URL: required"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := baseEnv()
			for k, v := range tc.set {
				e[k] = v
			}
			_, err := ConfigFromEnv(env(e))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			// Errors may be logged: no token may appear in them.
			for _, secret := range []string{"acme-secret-token-1-padded-to-32-bytes", "globex-secret-token-2-padded-to-32-bytes", "same-token", "0123456789abcdef", "dev-token", "sec ret", "t1", "t2", "pg-password"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q reveals %q", err, secret)
				}
			}
		})
	}
}

func TestConfigLogValueHidesSecrets(t *testing.T) {
	t.Parallel()
	e := baseEnv()
	e["NATS_URL"] = "nats://user:nats-password@nats:4222,nats://nats-token@other:4222"
	cfg, err := ConfigFromEnv(env(e))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", cfg)
	out := buf.String()
	for _, secret := range []string{"acme-secret-token-1-padded-to-32-bytes", "globex-secret-token-2-padded-to-32-bytes", "pg-password", "nats-password", "nats-token"} {
		if strings.Contains(out, secret) {
			t.Errorf("log reveals %q: %s", secret, out)
		}
	}
	for _, shown := range []string{`"clients":"acme,globex"`, `"tokens":2`, `"dispatch_mode":"async"`, `nats:4222`, `db:5432`} {
		if !strings.Contains(out, shown) {
			t.Errorf("log lacks %s: %s", shown, out)
		}
	}
}

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	c, err := Config{
		Tokens:      []ClientToken{{Client: "dev", Token: "dev-token"}},
		DatabaseURL: "postgres://x",
		NATSURL:     "nats://127.0.0.1:4222",
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != DefaultAddr || c.StreamReplicas != 1 || c.DispatchMode != ModeAsync ||
		c.SyncTimeout != DefaultSyncTimeout || c.StartTimeout != DefaultStartTimeout || c.Logger == nil {
		t.Errorf("defaults not filled in: %+v", c)
	}
	// Without API_TOKENS only the database's clients authenticate.
	if c, err := (Config{DatabaseURL: "postgres://x", NATSURL: "nats://h:1"}).withDefaults(); err != nil || len(c.Tokens) != 0 {
		t.Errorf("no tokens: %v, %v", c.Tokens, err)
	}
	if _, err := (Config{
		Tokens:      []ClientToken{{Client: "a", Token: "x"}, {Client: "b", Token: "x"}},
		DatabaseURL: "postgres://x", NATSURL: "nats://h:1",
	}).withDefaults(); err == nil {
		t.Error("shared token accepted")
	}
}

func TestTokenSet(t *testing.T) {
	t.Parallel()
	ts := newTokenSet([]ClientToken{
		{Client: "acme", Token: "acme-token"},
		{Client: "globex", Token: "globex-token"},
		{Client: "acme", Token: "acme-rotated"},
	})
	for token, want := range map[string]string{
		"acme-token":     "acme",
		"globex-token":   "globex",
		"acme-rotated":   "acme",
		"":               "",
		"acme":           "",
		"acme-token ":    "",
		"ACME-TOKEN":     "",
		"acme-token\x00": "",
	} {
		if got := ts.client(token); got != want {
			t.Errorf("client(%q) = %q, want %q", token, got, want)
		}
	}
}
