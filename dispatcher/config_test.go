package dispatcher

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// minimalEnv is the least a production dispatcher needs.
func minimalEnv() map[string]string {
	return map[string]string{
		"NATS_URL":               "nats://127.0.0.1:14222",
		"DARAJA_CONSUMER_KEY":    "ck-123",
		"DARAJA_CONSUMER_SECRET": "cs-456",
		"CALLBACK_BASE_URL":      "https://pay.example.com",
		"CALLBACK_SECRET":        testCallbackSecret,
	}
}

const testCallbackSecret = "config-test-callback-secret-0123456789abcdef"

func mustSecrets(t *testing.T, list string) events.CallbackSecrets {
	t.Helper()
	s, err := events.ParseCallbackSecrets(list)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConfigFromEnvDefaults(t *testing.T) {
	got, err := ConfigFromEnv(env(minimalEnv()))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		NATSURL:        "nats://127.0.0.1:14222",
		StreamReplicas: 1,
		Daraja: daraja.Config{
			BaseURL:         "https://sandbox.safaricom.co.ke",
			ConsumerKey:     "ck-123",
			ConsumerSecret:  "cs-456",
			ShortCode:       "174379",
			PassKey:         SandboxPassKey,
			TransactionType: "CustomerPayBillOnline",
			PartyB:          "174379",
			MaxRPS:          20,
		},
		CallbackBaseURL:   "https://pay.example.com",
		CallbackSecrets:   mustSecrets(t, testCallbackSecret),
		Concurrency:       32,
		ClientMaxInFlight: 16,
		RetryMaxElapsed:   2 * time.Minute,
		Tracing:           tracing.Config{ServiceName: "dispatcher", Sampler: tracing.SamplerParentBasedAlwaysOn, SamplerArg: 1},
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(daraja.Config{}, Config{})); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestConfigFromEnvEverySetting(t *testing.T) {
	e := map[string]string{
		"NATS_URL":                      "nats://n1:4222, nats://n2:4222",
		"NATS_STREAM_REPLICAS":          "3",
		"DARAJA_BASE_URL":               "https://api.safaricom.co.ke/",
		"DARAJA_CONSUMER_KEY":           "ck",
		"DARAJA_CONSUMER_SECRET":        "cs",
		"DARAJA_SHORTCODE":              "600999",
		"DARAJA_PASSKEY":                "pk",
		"DARAJA_TRANSACTION_TYPE":       "CustomerBuyGoodsOnline",
		"DARAJA_PARTY_B":                "5123456",
		"DARAJA_MAX_RPS":                "2.5",
		"CALLBACK_BASE_URL":             "https://Pay.Example.COM/stkgate/",
		"CALLBACK_SECRET":               testCallbackSecret + ",old-callback-secret-0123456789abcdefgh",
		"DISPATCH_CONCURRENCY":          "64",
		"DISPATCH_CLIENT_MAX_IN_FLIGHT": "20",
		"DISPATCH_RETRY_MAX":            "90s",
	}
	got, err := ConfigFromEnv(env(e))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		NATSURL:        "nats://n1:4222, nats://n2:4222",
		StreamReplicas: 3,
		Daraja: daraja.Config{
			BaseURL:         "https://api.safaricom.co.ke",
			ConsumerKey:     "ck",
			ConsumerSecret:  "cs",
			ShortCode:       "600999",
			PassKey:         "pk",
			TransactionType: "CustomerBuyGoodsOnline",
			PartyB:          "5123456",
			MaxRPS:          2.5,
		},
		// Daraja has refused an uppercase host.
		CallbackBaseURL:   "https://pay.example.com/stkgate/",
		CallbackSecrets:   mustSecrets(t, testCallbackSecret+",old-callback-secret-0123456789abcdefgh"),
		Concurrency:       64,
		ClientMaxInFlight: 20,
		RetryMaxElapsed:   90 * time.Second,
		Tracing:           tracing.Config{ServiceName: "dispatcher", Sampler: tracing.SamplerParentBasedAlwaysOn, SamplerArg: 1},
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(daraja.Config{}, Config{})); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestConfigFromEnvRefuses(t *testing.T) {
	tests := []struct {
		name  string
		set   map[string]string
		unset []string
		want  []string // variables the error must name
	}{
		{name: "nothing set", unset: []string{"NATS_URL", "DARAJA_CONSUMER_KEY", "DARAJA_CONSUMER_SECRET", "CALLBACK_BASE_URL", "CALLBACK_SECRET"},
			want: []string{"NATS_URL: required", "DARAJA_CONSUMER_KEY: required", "DARAJA_CONSUMER_SECRET: required", "CALLBACK_BASE_URL: required", "CALLBACK_SECRET: required"}},
		{name: "short callback secret", set: map[string]string{"CALLBACK_SECRET": "too-short"}, want: []string{"CALLBACK_SECRET: secret 1 of the list is 9 bytes long"}},
		{name: "short old callback secret", set: map[string]string{"CALLBACK_SECRET": testCallbackSecret + ",too-short"}, want: []string{"CALLBACK_SECRET: secret 2"}},
		{name: "no consumer key", unset: []string{"DARAJA_CONSUMER_KEY"}, want: []string{"DARAJA_CONSUMER_KEY"}},
		{name: "blank consumer secret", set: map[string]string{"DARAJA_CONSUMER_SECRET": "  "}, want: []string{"DARAJA_CONSUMER_SECRET"}},
		{name: "no callback base", unset: []string{"CALLBACK_BASE_URL"}, want: []string{"CALLBACK_BASE_URL"}},
		{name: "relative callback base", set: map[string]string{"CALLBACK_BASE_URL": "/hooks"}, want: []string{"CALLBACK_BASE_URL"}},
		{name: "callback base not http", set: map[string]string{"CALLBACK_BASE_URL": "ftp://pay.example.com"}, want: []string{"CALLBACK_BASE_URL"}},
		{name: "callback base with query", set: map[string]string{"CALLBACK_BASE_URL": "https://pay.example.com/?a=b"}, want: []string{"CALLBACK_BASE_URL"}},
		{name: "callback base with credentials", set: map[string]string{"CALLBACK_BASE_URL": "https://u:p@pay.example.com"}, want: []string{"CALLBACK_BASE_URL"}},
		{name: "nats url without scheme", set: map[string]string{"NATS_URL": "localhost:4222"}, want: []string{"NATS_URL"}},
		{name: "nats url empty part", set: map[string]string{"NATS_URL": "nats://a:1,"}, want: []string{"NATS_URL"}},
		{name: "nats url http", set: map[string]string{"NATS_URL": "http://localhost:4222"}, want: []string{"NATS_URL"}},
		{name: "replicas zero", set: map[string]string{"NATS_STREAM_REPLICAS": "0"}, want: []string{"NATS_STREAM_REPLICAS"}},
		{name: "replicas six", set: map[string]string{"NATS_STREAM_REPLICAS": "6"}, want: []string{"NATS_STREAM_REPLICAS"}},
		{name: "replicas word", set: map[string]string{"NATS_STREAM_REPLICAS": "three"}, want: []string{"NATS_STREAM_REPLICAS"}},
		{name: "daraja base not a url", set: map[string]string{"DARAJA_BASE_URL": "sandbox.safaricom.co.ke"}, want: []string{"DARAJA_BASE_URL"}},
		{name: "daraja base http", set: map[string]string{"DARAJA_BASE_URL": "http://sandbox.safaricom.co.ke"}, want: []string{"DARAJA_BASE_URL: the URL is http on a host other than loopback; it must be https"}},
		{name: "daraja base http on a private address", set: map[string]string{"DARAJA_BASE_URL": "http://10.0.0.7:8080"}, want: []string{"DARAJA_BASE_URL: the URL is http on a host other than loopback; it must be https"}},
		{name: "daraja base http on a name ending in localhost", set: map[string]string{"DARAJA_BASE_URL": "http://localhost.example.com"}, want: []string{"DARAJA_BASE_URL: the URL is http on a host other than loopback; it must be https"}},
		{name: "production with the sandbox shortcode and passkey", set: map[string]string{"DARAJA_BASE_URL": "https://api.safaricom.co.ke"},
			want: []string{`DARAJA_SHORTCODE: "174379" is the sandbox's shortcode`, "DARAJA_PASSKEY: the sandbox's published passkey is not for production"}},
		{name: "production with the sandbox shortcode", set: map[string]string{"DARAJA_BASE_URL": "https://API.Safaricom.co.ke:443/", "DARAJA_PASSKEY": "own-passkey", "DARAJA_SHORTCODE": "174379"},
			want: []string{`DARAJA_SHORTCODE: "174379" is the sandbox's shortcode; it must be your own on production (api.safaricom.co.ke)`}},
		{name: "production with the sandbox passkey", set: map[string]string{"DARAJA_BASE_URL": "https://api.safaricom.co.ke", "DARAJA_SHORTCODE": "600999", "DARAJA_PASSKEY": SandboxPassKey},
			want: []string{"DARAJA_PASSKEY: the sandbox's published passkey is not for production; it must be your own on api.safaricom.co.ke"}},
		{name: "shortcode letters", set: map[string]string{"DARAJA_SHORTCODE": "17437a"}, want: []string{"DARAJA_SHORTCODE"}},
		{name: "shortcode too short", set: map[string]string{"DARAJA_SHORTCODE": "1743"}, want: []string{"DARAJA_SHORTCODE"}},
		{name: "shortcode too long", set: map[string]string{"DARAJA_SHORTCODE": "17437900"}, want: []string{"DARAJA_SHORTCODE"}},
		{name: "passkey with space", set: map[string]string{"DARAJA_PASSKEY": "abc def"}, want: []string{"DARAJA_PASSKEY"}},
		{name: "transaction type alias", set: map[string]string{"DARAJA_TRANSACTION_TYPE": "paybill"}, want: []string{"DARAJA_TRANSACTION_TYPE"}},
		{name: "party b letters", set: map[string]string{"DARAJA_PARTY_B": "till-1"}, want: []string{"DARAJA_PARTY_B"}},
		{name: "concurrency zero", set: map[string]string{"DISPATCH_CONCURRENCY": "0"}, want: []string{"DISPATCH_CONCURRENCY"}},
		{name: "concurrency too high", set: map[string]string{"DISPATCH_CONCURRENCY": "5000"}, want: []string{"DISPATCH_CONCURRENCY"}},
		{name: "concurrency word", set: map[string]string{"DISPATCH_CONCURRENCY": "many"}, want: []string{"DISPATCH_CONCURRENCY"}},
		{name: "client max zero", set: map[string]string{"DISPATCH_CLIENT_MAX_IN_FLIGHT": "0"}, want: []string{"DISPATCH_CLIENT_MAX_IN_FLIGHT"}},
		{name: "client max too high", set: map[string]string{"DISPATCH_CLIENT_MAX_IN_FLIGHT": "5000"}, want: []string{"DISPATCH_CLIENT_MAX_IN_FLIGHT"}},
		{name: "client max word", set: map[string]string{"DISPATCH_CLIENT_MAX_IN_FLIGHT": "half"}, want: []string{"DISPATCH_CLIENT_MAX_IN_FLIGHT"}},
		{name: "retry max without unit", set: map[string]string{"DISPATCH_RETRY_MAX": "120"}, want: []string{"DISPATCH_RETRY_MAX"}},
		{name: "retry max negative", set: map[string]string{"DISPATCH_RETRY_MAX": "-1m"}, want: []string{"DISPATCH_RETRY_MAX"}},
		{name: "max rps negative", set: map[string]string{"DARAJA_MAX_RPS": "-1"}, want: []string{`DARAJA_MAX_RPS: "-1" is not in range; it must be a number from 0 to 10000`}},
		{name: "daraja base with credentials", set: map[string]string{"DARAJA_BASE_URL": "https://u:p@sandbox.safaricom.co.ke"}, want: []string{"DARAJA_BASE_URL: the URL carries credentials"}},
		{name: "consumer key with a colon", set: map[string]string{"DARAJA_CONSUMER_KEY": "ck:1"}, want: []string{"DARAJA_CONSUMER_KEY: the value has a ':'"}},
		{name: "max rps word", set: map[string]string{"DARAJA_MAX_RPS": "fast"}, want: []string{"DARAJA_MAX_RPS"}},
		{name: "max rps NaN", set: map[string]string{"DARAJA_MAX_RPS": "NaN"}, want: []string{"DARAJA_MAX_RPS"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := minimalEnv()
			for _, k := range tc.unset {
				delete(e, k)
			}
			for k, v := range tc.set {
				e[k] = v
			}
			_, err := ConfigFromEnv(env(e))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

// DARAJA_BASE_URL may be http only on loopback, where a simulator runs.
func TestConfigDarajaBaseURLAccepted(t *testing.T) {
	for _, base := range []string{
		"https://sandbox.safaricom.co.ke",
		"http://127.0.0.1:5555",
		"http://127.9.8.7:5555",
		"http://[::1]:5555/",
		"http://localhost:5555",
		"http://LOCALHOST",
		"https://daraja-proxy.internal:8443",
	} {
		e := minimalEnv()
		e["DARAJA_BASE_URL"] = base
		if _, err := ConfigFromEnv(env(e)); err != nil {
			t.Errorf("DARAJA_BASE_URL=%s: %v", base, err)
		}
	}
}

func TestConfigErrorDoesNotEchoSecrets(t *testing.T) {
	for name, value := range map[string]string{
		"DARAJA_SHORTCODE":  "s3cr3t-passkey-pasted-here",
		"NATS_URL":          "nats://u:s3cr3t@:bad:port",
		"DARAJA_BASE_URL":   "https://u:s3cr3t@host:bad:port",
		"CALLBACK_BASE_URL": "https://u:s3cr3t@pay.example.com",
	} {
		e := minimalEnv()
		e[name] = value
		_, err := ConfigFromEnv(env(e))
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Fatalf("%s=%q: error %v does not name it", name, value, err)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: error echoes a secret: %v", name, err)
		}
	}
}

func TestConfigLogValueMasksSecrets(t *testing.T) {
	e := minimalEnv()
	e["NATS_URL"] = "nats://natsuser:natspass@n1:4222,nats://s3cr3ttoken@n2:4222"
	e["DARAJA_PASSKEY"] = "passkey-789"
	cfg, err := ConfigFromEnv(env(e))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", cfg)
	out := buf.String()
	for _, secret := range []string{"ck-123", "cs-456", "passkey-789", "natsuser", "natspass", "s3cr3ttoken"} {
		if strings.Contains(out, secret) {
			t.Errorf("log line contains secret %q: %s", secret, out)
		}
	}
	for _, shown := range []string{`"daraja_shortcode":"174379"`, `"callback_base_url":"https://pay.example.com"`, `"concurrency":32`, `"client_max_in_flight":16`, "n1:4222"} {
		if !strings.Contains(out, shown) {
			t.Errorf("log line lacks %s: %s", shown, out)
		}
	}
}
