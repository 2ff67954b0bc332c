package webhooks

// The worker's settings: Config, its defaults, and ConfigFromEnv.

import (
	"crypto/tls"
	"log/slog"
	"strings"
	"time"

	"github.com/stkgate/stkgate/events/kit/envconf"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/redact"
	"github.com/stkgate/stkgate/events/kit/webhook"
)

// Config configures Run; zero fields take the defaults.
type Config struct {
	NATSURL     string
	DatabaseURL string
	// StreamReplicas of STK_WEBHOOKS (and of STK if this creates it).
	StreamReplicas int
	// SecretKeys opens the endpoints' sealed secrets (WEBHOOK_SECRET_KEY).
	SecretKeys string
	// Policy: development mode allows http:// and loopback.
	Policy webhook.Policy
	// Concurrency is how many tasks are handled at once (32).
	Concurrency int
	// PerEndpoint bounds the attempts in flight to one endpoint (4).
	PerEndpoint int
	// PerClient bounds the attempts in flight to all of one client's
	// endpoints together (a quarter of Concurrency, at least PerEndpoint).
	PerClient int
	// SlowAfter: a 2xx answer later than this counts as a failure for the
	// breaker (it is delivered all the same), so that endpoints answering
	// just within the timeout do not hold handlers unchecked (5 s).
	SlowAfter time.Duration
	// BreakerFailures consecutive failures open an endpoint's breaker (5)
	// for BreakerCooldown (30 s), doubling up to 10 minutes.
	BreakerFailures int
	BreakerCooldown time.Duration
	Backoff         Backoff
	// Timeout bounds one attempt (webhook.DefaultTimeout).
	Timeout time.Duration
	// Lookup resolves endpoint hosts (tests); nil: the system's.
	Lookup webhook.Lookup
	// TLS is the client's TLS configuration (tests: a test CA).
	TLS *tls.Config
	// FetchWait of the consumers (worker.DefaultFetchWait).
	FetchWait time.Duration
	Logger    *slog.Logger
	// Metrics counts the attempts and deliveries, and the consumers'
	// messages; nil: not counted.
	Metrics *metrics.Registry
	// Ready, when set, is called once both consumers are consuming.
	Ready func()
}

// Defaults.
const (
	DefaultConcurrency     = 32
	DefaultPerEndpoint     = 4
	DefaultBreakerFailures = 5
	DefaultBreakerCooldown = 30 * time.Second
	DefaultSlowAfter       = 5 * time.Second
	maxBreakerCooldown     = 10 * time.Minute
	// busyWait is how long a task whose endpoint is at its in-flight limit
	// waits, before jitter: long against a nak's cost, short against a
	// payment's.
	busyWait = 2 * time.Second
	// storeWait is the wait after a failure of Postgres or JetStream.
	storeWait = 5 * time.Second
	opTimeout = 10 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.PerEndpoint <= 0 {
		c.PerEndpoint = DefaultPerEndpoint
	}
	if c.PerClient <= 0 {
		c.PerClient = max(c.PerEndpoint, c.Concurrency/4)
	}
	if c.SlowAfter <= 0 {
		c.SlowAfter = DefaultSlowAfter
	}
	if c.BreakerFailures <= 0 {
		c.BreakerFailures = DefaultBreakerFailures
	}
	if c.BreakerCooldown <= 0 {
		c.BreakerCooldown = DefaultBreakerCooldown
	}
	if c.Backoff == (Backoff{}) {
		c.Backoff = DefaultBackoff
	}
	if c.Timeout <= 0 {
		c.Timeout = webhook.DefaultTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// LogValue shows the configuration without its secrets.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("nats_url", redact.URLs(c.NATSURL)),
		slog.String("database_url", redact.URLs(c.DatabaseURL)),
		slog.String("secret_key", redact.Secret(c.SecretKeys)),
		slog.Bool("dev_mode", c.Policy.Dev),
		slog.Int("concurrency", c.Concurrency),
		slog.Int("per_endpoint", c.PerEndpoint),
		slog.Int("per_client", c.PerClient),
		slog.String("slow_after", c.SlowAfter.String()),
		slog.Int("stream_replicas", c.StreamReplicas),
		slog.Int("breaker_failures", c.BreakerFailures),
		slog.String("breaker_cooldown", c.BreakerCooldown.String()),
		slog.String("timeout", c.Timeout.String()),
		slog.Any("backoff", c.Backoff),
	)
}

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
