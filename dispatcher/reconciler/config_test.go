package reconciler

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/logtest"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func base() map[string]string {
	return map[string]string{
		"NATS_URL":               "nats://user:pw@127.0.0.1:14222",
		"DARAJA_CONSUMER_KEY":    "key-123",
		"DARAJA_CONSUMER_SECRET": "secret-456",
		"DARAJA_PASSKEY":         "passkey-789",
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		set     map[string]string
		want    func(*Config)
		wantErr []string // substrings, each naming a variable
	}{
		{name: "defaults", want: func(c *Config) {}},
		{
			name: "own settings",
			set: map[string]string{"RECONCILE_AFTER": "90s", "RECONCILE_UNKNOWN_DEADLINE": "20m",
				"RECONCILE_REQUEST_DEADLINE": "1h", "NATS_STREAM_REPLICAS": "3", "CALLBACK_BASE_URL": "https://cb.example.com"},
			want: func(c *Config) {
				c.ReconcileAfter, c.UnknownDeadline, c.RequestDeadline, c.StreamReplicas = 90*time.Second, 20*time.Minute, time.Hour, 3
			},
		},
		// The reconciler signs no CallBackURL: the dispatcher's callback
		// settings are not its business, bad or missing.
		{name: "callback settings not read", set: map[string]string{"CALLBACK_BASE_URL": "/hooks", "CALLBACK_SECRET": "short"}, want: func(c *Config) {}},
		{name: "no receipt wait", set: map[string]string{"RECONCILE_RECEIPT_WAIT": "0"}, want: func(c *Config) { c.ReceiptWait = -1 }},
		{name: "receipt wait", set: map[string]string{"RECONCILE_RECEIPT_WAIT": "2m"}, want: func(c *Config) { c.ReceiptWait = 2 * time.Minute }},
		{name: "malformed receipt wait", set: map[string]string{"RECONCILE_RECEIPT_WAIT": "-1s"}, wantErr: []string{"RECONCILE_RECEIPT_WAIT"}},
		{name: "query intervals", set: map[string]string{"RECONCILE_QUERY_INTERVAL": "2s", "RECONCILE_QUERY_MAX_INTERVAL": "10s"},
			want: func(c *Config) { c.QueryInterval, c.QueryMaxInterval = 2*time.Second, 10*time.Second }},
		{name: "query max interval shorter than the first", set: map[string]string{"RECONCILE_QUERY_INTERVAL": "20s", "RECONCILE_QUERY_MAX_INTERVAL": "10s"},
			wantErr: []string{"RECONCILE_QUERY_MAX_INTERVAL: 10s must not be shorter than RECONCILE_QUERY_INTERVAL (20s)"}},
		{name: "malformed query intervals", set: map[string]string{"RECONCILE_QUERY_INTERVAL": "0", "RECONCILE_QUERY_MAX_INTERVAL": "1ms"},
			wantErr: []string{"RECONCILE_QUERY_INTERVAL", "RECONCILE_QUERY_MAX_INTERVAL"}},
		{name: "prompt lifetime for a simulator", set: map[string]string{"RECONCILE_PROMPT_LIFETIME": "10s", "DISPATCH_RETRY_MAX": "30s",
			"RECONCILE_REQUEST_DEADLINE": "41s"}, want: func(c *Config) { c.PromptLifetime, c.RequestDeadline = 10*time.Second, 41*time.Second }},
		{name: "request deadline against a shorter prompt lifetime", set: map[string]string{"RECONCILE_PROMPT_LIFETIME": "10s", "DISPATCH_RETRY_MAX": "30s",
			"RECONCILE_REQUEST_DEADLINE": "40s"}, wantErr: []string{"RECONCILE_REQUEST_DEADLINE: 40s must exceed"}},
		{name: "malformed durations", set: map[string]string{"RECONCILE_AFTER": "soon", "RECONCILE_UNKNOWN_DEADLINE": "-1m", "RECONCILE_REQUEST_DEADLINE": "0",
			"RECONCILE_PROMPT_LIFETIME": "3"},
			wantErr: []string{"RECONCILE_AFTER", "RECONCILE_UNKNOWN_DEADLINE", "RECONCILE_REQUEST_DEADLINE", "RECONCILE_PROMPT_LIFETIME"}},
		{name: "request deadline within the dispatcher's retries and a prompt", set: map[string]string{"RECONCILE_REQUEST_DEADLINE": "5m"},
			wantErr: []string{"RECONCILE_REQUEST_DEADLINE: 5m0s must exceed DISPATCH_RETRY_MAX"}},
		{name: "request deadline against a longer retry budget", set: map[string]string{"DISPATCH_RETRY_MAX": "20m"},
			wantErr: []string{"RECONCILE_REQUEST_DEADLINE"}},
		{name: "unknown deadline shorter than reconcile after", set: map[string]string{"RECONCILE_AFTER": "5m", "RECONCILE_UNKNOWN_DEADLINE": "1m"},
			wantErr: []string{"RECONCILE_UNKNOWN_DEADLINE"}},
		{name: "shared settings are checked as the dispatcher checks them", set: map[string]string{"NATS_URL": "", "DARAJA_CONSUMER_SECRET": "", "DARAJA_SHORTCODE": "12"},
			wantErr: []string{"NATS_URL: required", "DARAJA_CONSUMER_SECRET: required", "DARAJA_SHORTCODE: the value is not 5 to 7 digits"}},
		{name: "NATS_URL checked", set: map[string]string{"NATS_URL": "http://nats:4222"}, wantErr: []string{`NATS_URL: scheme "http" is not one a NATS client dials`}},
		{name: "malformed DISPATCH_RETRY_MAX", set: map[string]string{"DISPATCH_RETRY_MAX": "120"}, wantErr: []string{`DISPATCH_RETRY_MAX: "120" is not a duration`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			for k, v := range tc.set {
				m[k] = v
			}
			got, err := ConfigFromEnv(env(m))
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, want one naming %v", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %s", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Config{
				NATSURL:          "nats://user:pw@127.0.0.1:14222",
				StreamReplicas:   1,
				ReconcileAfter:   DefaultReconcileAfter,
				UnknownDeadline:  DefaultUnknownDeadline,
				RequestDeadline:  DefaultRequestDeadline,
				ReceiptWait:      events.PromptLifetime,
				PromptLifetime:   events.PromptLifetime,
				QueryInterval:    DefaultQueryInterval,
				QueryMaxInterval: DefaultQueryMaxInterval,
			}
			want.Daraja = got.Daraja // daraja.ConfigFromEnv, tested in the dispatcher
			// tracing.FromEnv is tested in its package.
			want.Tracing = got.Tracing
			tc.want(&want)
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Config{}, "Logger")); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
			if got.Daraja.ConsumerKey != "key-123" || got.Daraja.PassKey != "passkey-789" || got.Daraja.ShortCode != "174379" {
				t.Errorf("daraja settings %+v not read", got.Daraja.LogValue())
			}
		})
	}
}

func TestConfigLogValueHidesSecrets(t *testing.T) {
	t.Parallel()
	cfg, err := ConfigFromEnv(env(base()))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "config", cfg)
	for _, secret := range []string{"secret-456", "passkey-789", "key-123", "pw@"} {
		if strings.Contains(b.String(), secret) {
			t.Errorf("log line %s shows %q", b.String(), secret)
		}
	}
	if !strings.Contains(b.String(), `"reconcile_after":60000000000`) {
		t.Errorf("log line %s lacks the settings", b.String())
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	t.Parallel()
	good := fastConfig("nats://127.0.0.1:1", daraja.Config{BaseURL: "http://127.0.0.1:1", ConsumerKey: "k",
		ConsumerSecret: "s", ShortCode: "174379", PassKey: "p"}, &logtest.Buffer{})
	for _, tc := range []struct {
		name string
		tune func(*Config)
	}{
		{"no NATS", func(c *Config) { c.NATSURL = "" }},
		{"request deadline within a prompt", func(c *Config) { c.RequestDeadline = c.PromptLifetime }},
		{"unknown deadline before reconcile after", func(c *Config) { c.UnknownDeadline = c.ReconcileAfter / 2 }},
		{"bad daraja", func(c *Config) { c.Daraja.ShortCode = "x" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.tune(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := Run(ctx, cfg); err == nil {
				t.Error("Run started")
			}
		})
	}
}
