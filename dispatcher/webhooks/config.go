package webhooks

import (
	"strings"
	"time"

	"github.com/stkgate/stkgate/events/kit/envconf"
	"github.com/stkgate/stkgate/events/kit/webhook"
)

// ConfigFromEnv reads the worker's settings (docs/CONFIG.md): NATS_URL,
// DATABASE_URL and WEBHOOK_SECRET_KEY (required), NATS_STREAM_REPLICAS
// (1), WEBHOOK_DEV_MODE (false), WEBHOOK_CONCURRENCY (32),
// WEBHOOK_PER_ENDPOINT (4), WEBHOOK_PER_CLIENT (a quarter of the
// concurrency), WEBHOOK_TIMEOUT (10s), WEBHOOK_RETRY_FOR (24h).
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	e := envconf.New(getenv)
	cfg := Config{
		NATSURL:        e.NATSURL("NATS_URL", ""),
		DatabaseURL:    e.Required("DATABASE_URL", "a Postgres URL such as postgres://user@host:5432/stkgate"),
		StreamReplicas: e.Replicas("NATS_STREAM_REPLICAS", 1),
		SecretKeys:     e.Required("WEBHOOK_SECRET_KEY", "32 bytes in base64 (openssl rand -base64 32), the key stkgate-admin seals endpoint secrets with"),
		Policy:         webhook.Policy{Dev: e.Bool("WEBHOOK_DEV_MODE", false)},
		Concurrency:    e.Int("WEBHOOK_CONCURRENCY", DefaultConcurrency, 1, 1024),
		PerEndpoint:    e.Int("WEBHOOK_PER_ENDPOINT", DefaultPerEndpoint, 1, 64),
		PerClient:      e.Int("WEBHOOK_PER_CLIENT", 0, 1, 1024),
		Timeout:        e.Duration("WEBHOOK_TIMEOUT", webhook.DefaultTimeout, time.Second, time.Minute),
		Backoff:        DefaultBackoff,
	}
	cfg.Backoff.RetryFor = e.Duration("WEBHOOK_RETRY_FOR", DefaultBackoff.RetryFor, time.Minute, 6*24*time.Hour)
	if k := strings.TrimSpace(cfg.SecretKeys); k != "" {
		if _, err := webhook.NewSealer(k); err != nil {
			e.Fail("WEBHOOK_SECRET_KEY", err)
		}
	}
	if err := e.Err(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}
