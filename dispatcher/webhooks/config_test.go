package webhooks_test

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/webhooks"
	"github.com/stkgate/stkgate/events/testkit/logtest"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func baseEnv(t *testing.T) map[string]string {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return map[string]string{
		"NATS_URL":           "nats://nats:4222",
		"DATABASE_URL":       "postgres://stkgate:pg-pw-5d1c@db:5432/stkgate",
		"WEBHOOK_SECRET_KEY": base64.StdEncoding.EncodeToString(k),
	}
}

func TestConfigFromEnv(t *testing.T) {
	cfg, err := webhooks.ConfigFromEnv(envOf(baseEnv(t)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Policy.Dev || cfg.Backoff.RetryFor != 24*time.Hour || cfg.Concurrency != webhooks.DefaultConcurrency || cfg.Timeout != 10*time.Second {
		t.Errorf("defaults: %+v", cfg)
	}
	e := baseEnv(t)
	e["WEBHOOK_PER_CLIENT"] = "6"
	if cfg, err := webhooks.ConfigFromEnv(envOf(e)); err != nil || cfg.PerClient != 6 {
		t.Errorf("WEBHOOK_PER_CLIENT=6: %d, %v", cfg.PerClient, err)
	}
	for _, tc := range []struct{ name, value string }{
		{"WEBHOOK_SECRET_KEY", ""},
		{"WEBHOOK_SECRET_KEY", "c2hvcnQ="},
		{"DATABASE_URL", ""},
		{"WEBHOOK_RETRY_FOR", "1s"},
		{"WEBHOOK_PER_ENDPOINT", "0"},
		{"WEBHOOK_PER_CLIENT", "0"},
		{"WEBHOOK_DEV_MODE", "maybe"},
	} {
		e := baseEnv(t)
		e[tc.name] = tc.value
		_, err := webhooks.ConfigFromEnv(envOf(e))
		if err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s=%q: %v, want an error naming it", tc.name, tc.value, err)
		}
		if err != nil && tc.name == "WEBHOOK_SECRET_KEY" && tc.value != "" && strings.Contains(err.Error(), tc.value) {
			t.Errorf("the error shows the key: %v", err)
		}
	}
}

func TestConfigLogged(t *testing.T) {
	e := baseEnv(t)
	cfg, err := webhooks.ConfigFromEnv(envOf(e))
	if err != nil {
		t.Fatal(err)
	}
	logtest.CheckConfig(t, cfg, logtest.Options{
		Secrets: []string{"SecretKeys"},
		NotLogged: []string{
			"Lookup: tests only", "TLS: tests only", "FetchWait: tests only",
			"Logger: not a setting", "Ready: not a setting", "Metrics: not a setting",
		},
		Leaks: []string{"pg-pw-5d1c", e["WEBHOOK_SECRET_KEY"]},
		Shows: []string{"nats:4222", "db:5432"},
	})
}
