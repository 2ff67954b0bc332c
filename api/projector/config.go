package projector

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/stkgate/stkgate/events/kit/envconf"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/redact"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

// Defaults of the settings that have one.
const (
	DefaultBatchSize        = 768
	DefaultStreamReplicas   = 1
	DefaultRetryMaxInterval = 10 * time.Second
	DefaultStartTimeout     = 2 * time.Minute
	DefaultApplyTimeout     = 15 * time.Second
	DefaultDrainTimeout     = 10 * time.Second
)

// MaxBatchSize bounds BatchSize. The consumer's MaxAckPending is 4096, and
// the projector holds up to five batches unacknowledged (four applied side
// by side, the next one gathered): with batches of more than 819 events,
// fewer are under way at once.
const MaxBatchSize = 2048

// Config is everything the projector needs. ConfigFromEnv fills it from the
// environment; tests and the dev stack may build it directly.
type Config struct {
	// NATSURL is the NATS server, or a comma-separated list of servers.
	NATSURL string
	// DatabaseURL is the Postgres holding the read model.
	DatabaseURL string
	// StreamReplicas of the STK stream, created at start-up if missing.
	StreamReplicas int
	// BatchSize is the most events applied in one transaction (default 768).
	BatchSize int
	// Tracing is the OpenTelemetry tracing (OTEL_*; docs/TRACING.md); off
	// when no endpoint is set.
	Tracing tracing.Config
	// Logger receives the projector's logs; nil means slog.Default().
	Logger *slog.Logger
	// Metrics is where the projector and its dead-letter watcher count
	// (metrics.Run makes it from PROJECTOR_METRICS_ADDR); nil: off.
	Metrics *metrics.Registry

	// The settings below are not read from the environment; zero means the
	// default. Tests shorten them.

	// RetryMaxInterval caps the wait between two attempts at a batch the
	// database did not take (default 10s; it must stay under the consumer's
	// AckWait, as the batch is held by InProgress between attempts).
	RetryMaxInterval time.Duration
	// StartTimeout bounds the start-up (database, migrations, stream and
	// consumer), retried until then (default 2m).
	StartTimeout time.Duration
	// ApplyTimeout bounds one transaction (default 15s).
	ApplyTimeout time.Duration
	// DrainTimeout bounds how long, after ctx is cancelled, the events
	// already received are still applied (default 10s); those left are
	// handed back to the next projector.
	DrainTimeout time.Duration
}

// ConfigFromEnv reads NATS_URL and DATABASE_URL (both required),
// NATS_STREAM_REPLICAS (default 1) and PROJECTOR_BATCH (default 768). It
// names every setting that is missing or malformed.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	e := envconf.New(getenv)
	c := Config{
		NATSURL:        e.NATSURL("NATS_URL", ""),
		DatabaseURL:    e.Required("DATABASE_URL", DatabaseURLForm),
		StreamReplicas: e.Replicas("NATS_STREAM_REPLICAS", DefaultStreamReplicas),
		BatchSize:      e.Int("PROJECTOR_BATCH", DefaultBatchSize, 1, MaxBatchSize),
	}
	c.Tracing = tracing.FromEnv(e, "projector")
	if err := e.Err(); err != nil {
		return Config{}, fmt.Errorf("projector configuration: %w", err)
	}
	return c, nil
}

// DatabaseURLForm is what DATABASE_URL must be, for its error.
const DatabaseURLForm = "a Postgres URL such as postgres://user@host:5432/stkgate"

// withDefaults fills in the zero settings of a Config built directly (the
// tests rely on it; ConfigFromEnv sets every one it reads) and checks the
// rest.
func (c Config) withDefaults() (Config, error) {
	if c.NATSURL == "" {
		return c, errors.New("projector: NATSURL is required")
	}
	if err := envconf.CheckNATSURL(c.NATSURL); err != nil {
		return c, fmt.Errorf("projector: NATSURL: %w", err)
	}
	if c.DatabaseURL == "" {
		return c, errors.New("projector: DatabaseURL is required")
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchSize < 0 || c.BatchSize > MaxBatchSize {
		return c, fmt.Errorf("projector: BatchSize %d not in 1..%d", c.BatchSize, MaxBatchSize)
	}
	if c.StreamReplicas == 0 {
		c.StreamReplicas = DefaultStreamReplicas
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	envconf.Default(&c.RetryMaxInterval, DefaultRetryMaxInterval)
	envconf.Default(&c.StartTimeout, DefaultStartTimeout)
	envconf.Default(&c.ApplyTimeout, DefaultApplyTimeout)
	envconf.Default(&c.DrainTimeout, DefaultDrainTimeout)
	return c, nil
}

// LogValue shows the configuration with the passwords in its URLs masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("nats_url", redact.URLs(c.NATSURL)),
		slog.Any("tracing", c.Tracing),
		slog.String("database_url", redact.URLs(c.DatabaseURL)),
		slog.Int("stream_replicas", c.StreamReplicas),
		slog.Int("batch_size", c.BatchSize),
	)
}
