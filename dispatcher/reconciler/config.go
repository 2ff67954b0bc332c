package reconciler

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/stkgate/stkgate/dispatcher"
	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/envconf"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/redact"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

// Defaults of the settings that have one.
const (
	DefaultReconcileAfter   = 60 * time.Second
	DefaultUnknownDeadline  = 10 * time.Minute
	DefaultRequestDeadline  = 15 * time.Minute
	DefaultQueryInterval    = 5 * time.Second
	DefaultQueryMaxInterval = 60 * time.Second
	DefaultConcurrency      = 8
	DefaultProgressEvery    = 10 * time.Second
	DefaultShutdownTimeout  = 30 * time.Second
)

// Config is everything the reconciler needs. ConfigFromEnv fills it from the
// environment; tests and the dev stack build it directly.
type Config struct {
	// NATSURL is the NATS server or a comma-separated list of servers.
	NATSURL string
	// StreamReplicas of the STK stream (and of the attempts bucket, should
	// the reconciler be the first to need it).
	StreamReplicas int
	// Daraja configures the client used for STK queries; the same
	// credentials as the dispatcher's.
	Daraja daraja.Config
	// ReconcileAfter is how long after a push is sent its callback is waited
	// for before Daraja is queried (RECONCILE_AFTER, default 60s).
	ReconcileAfter time.Duration
	// UnknownDeadline is how long after a push Daraja may still answer "The
	// transaction does not Exist" before that answer is taken as final and
	// the payment fails (RECONCILE_UNKNOWN_DEADLINE, default 10m).
	UnknownDeadline time.Duration
	// RequestDeadline is how long a request may go without a
	// CheckoutRequestID before it is finished as Failed, counted from the
	// request or from the last change of its attempt record, whichever is
	// later (RECONCILE_REQUEST_DEADLINE, default 15m). It must exceed the
	// dispatcher's retry budget plus events.PromptLifetime.
	RequestDeadline time.Duration
	// ReceiptWait is how long after the push a success learnt from the STK
	// query waits for the callback, which alone carries the receipt and the
	// transaction date (RECONCILE_RECEIPT_WAIT, default events.PromptLifetime;
	// "0" publishes at once). Zero means the default; negative, no wait.
	ReceiptWait time.Duration
	// PromptLifetime is how long a push whose answer was lost is waited on
	// for its callback before it fails (RECONCILE_PROMPT_LIFETIME, default
	// events.PromptLifetime). Shorter only against a simulator whose
	// callbacks are known to come sooner: a real callback arriving after it
	// would find the payment already failed.
	PromptLifetime time.Duration
	// QueryInterval is the first wait before asking Daraja again about a
	// transaction it says is still being processed, or about a callback held
	// for confirmation whose push has no CheckoutRequestID yet
	// (RECONCILE_QUERY_INTERVAL, default 5s); each later wait doubles, up to
	// QueryMaxInterval (RECONCILE_QUERY_MAX_INTERVAL, default 60s). Shorter
	// waits spend more of Daraja's query quota.
	QueryInterval    time.Duration
	QueryMaxInterval time.Duration

	// The settings below are not read from the environment; zero means the
	// default. Tests shorten them.
	// Concurrency is how many messages each consumer handles at once
	// (default 8).
	Concurrency int
	// ProgressInterval is how often a message being worked on is reported
	// in progress, well inside the consumers' AckWait (default 10s).
	ProgressInterval time.Duration
	// ShutdownTimeout bounds how long the messages in hand may finish after
	// ctx is cancelled (default 30s).
	ShutdownTimeout time.Duration

	// Tracing is the OpenTelemetry tracing (OTEL_*; docs/TRACING.md); off
	// when no endpoint is set.
	Tracing tracing.Config
	// Logger receives every log line; nil means slog.Default().
	Logger *slog.Logger
	// Metrics is where the reconciler counts, its Daraja calls too (the
	// dispatcher's Registry: they share a process); nil: off.
	Metrics *metrics.Registry
}

// ConfigFromEnv reads the configuration through getenv (os.Getenv in main).
// NATS_URL, NATS_STREAM_REPLICAS and the DARAJA_* variables are read by the
// readers the dispatcher uses (daraja.ConfigFromEnv for Daraja's, so the
// two never disagree), and DISPATCH_RETRY_MAX to check
// RECONCILE_REQUEST_DEADLINE against; the reconciler's own are
// RECONCILE_AFTER, RECONCILE_UNKNOWN_DEADLINE, RECONCILE_REQUEST_DEADLINE,
// RECONCILE_RECEIPT_WAIT, RECONCILE_QUERY_INTERVAL,
// RECONCILE_QUERY_MAX_INTERVAL and RECONCILE_PROMPT_LIFETIME (for
// simulators only). A missing or malformed setting is an error naming the variable;
// every problem is reported at once.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	e := envconf.New(getenv)
	const positive = time.Nanosecond
	cfg := Config{
		NATSURL:         e.NATSURL("NATS_URL", ""),
		StreamReplicas:  e.Replicas("NATS_STREAM_REPLICAS", 1),
		Daraja:          daraja.ConfigFromEnv(e),
		ReconcileAfter:  e.Duration("RECONCILE_AFTER", DefaultReconcileAfter, positive, envconf.MaxDuration),
		UnknownDeadline: e.Duration("RECONCILE_UNKNOWN_DEADLINE", DefaultUnknownDeadline, positive, envconf.MaxDuration),
		RequestDeadline: e.Duration("RECONCILE_REQUEST_DEADLINE", DefaultRequestDeadline, positive, envconf.MaxDuration),
		PromptLifetime:  e.Duration("RECONCILE_PROMPT_LIFETIME", events.PromptLifetime, positive, envconf.MaxDuration),
		// "0" publishes at once: the Config's "no wait" is negative.
		ReceiptWait:      e.Duration("RECONCILE_RECEIPT_WAIT", events.PromptLifetime, 0, envconf.MaxDuration),
		QueryInterval:    e.Duration("RECONCILE_QUERY_INTERVAL", DefaultQueryInterval, 100*time.Millisecond, envconf.MaxDuration),
		QueryMaxInterval: e.Duration("RECONCILE_QUERY_MAX_INTERVAL", DefaultQueryMaxInterval, 100*time.Millisecond, envconf.MaxDuration),
	}
	if cfg.ReceiptWait == 0 {
		cfg.ReceiptWait = -1
	}
	retryMax := dispatcher.RetryMaxFromEnv(e)
	// Earlier, and a request still being retried by the dispatcher (or
	// whose ambiguous push may still be answered) would be failed while its
	// push could still reach the customer.
	if least := retryMax + cfg.PromptLifetime; cfg.RequestDeadline <= least {
		e.Failf("RECONCILE_REQUEST_DEADLINE", "%s must exceed DISPATCH_RETRY_MAX plus the prompt's lifetime (%s)",
			cfg.RequestDeadline, least)
	}
	cfg.Tracing = tracing.FromEnv(e, "dispatcher")
	if cfg.UnknownDeadline < cfg.ReconcileAfter {
		e.Failf("RECONCILE_UNKNOWN_DEADLINE", "%s must not be shorter than RECONCILE_AFTER (%s)",
			cfg.UnknownDeadline, cfg.ReconcileAfter)
	}
	if cfg.QueryMaxInterval < cfg.QueryInterval {
		e.Failf("RECONCILE_QUERY_MAX_INTERVAL", "%s must not be shorter than RECONCILE_QUERY_INTERVAL (%s)",
			cfg.QueryMaxInterval, cfg.QueryInterval)
	}
	if err := e.Err(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// LogValue shows the configuration without its secrets.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("nats_url", redact.URLs(c.NATSURL)),
		slog.Any("tracing", c.Tracing),
		slog.Int("stream_replicas", c.StreamReplicas),
		slog.Any("daraja", c.Daraja),
		slog.Duration("reconcile_after", c.ReconcileAfter),
		slog.Duration("unknown_deadline", c.UnknownDeadline),
		slog.Duration("request_deadline", c.RequestDeadline),
		slog.Duration("receipt_wait", max(c.ReceiptWait, 0)),
		slog.Duration("prompt_lifetime", c.PromptLifetime),
		slog.Duration("query_interval", c.QueryInterval),
		slog.Duration("query_max_interval", c.QueryMaxInterval),
	)
}

// check refuses a configuration Run cannot work with.
func (c Config) check() error {
	switch {
	case c.NATSURL == "":
		return errors.New("NATSURL is required")
	case c.RequestDeadline <= c.PromptLifetime:
		return fmt.Errorf("RequestDeadline (%s) must exceed the prompt's lifetime (%s)", c.RequestDeadline, c.PromptLifetime)
	case c.UnknownDeadline < c.ReconcileAfter:
		return fmt.Errorf("UnknownDeadline (%s) must not be shorter than ReconcileAfter (%s)", c.UnknownDeadline, c.ReconcileAfter)
	case c.QueryMaxInterval < c.QueryInterval:
		return fmt.Errorf("QueryMaxInterval (%s) must not be shorter than QueryInterval (%s)", c.QueryMaxInterval, c.QueryInterval)
	}
	return nil
}

// withDefaults fills the zero settings that have a default.
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	envconf.Default(&c.StreamReplicas, 1)
	envconf.Default(&c.ReconcileAfter, DefaultReconcileAfter)
	envconf.Default(&c.UnknownDeadline, DefaultUnknownDeadline)
	envconf.Default(&c.RequestDeadline, DefaultRequestDeadline)
	envconf.Default(&c.PromptLifetime, events.PromptLifetime)
	if c.ReceiptWait == 0 {
		c.ReceiptWait = events.PromptLifetime
	}
	envconf.Default(&c.QueryInterval, DefaultQueryInterval)
	envconf.Default(&c.QueryMaxInterval, DefaultQueryMaxInterval)
	envconf.Default(&c.ProgressInterval, DefaultProgressEvery)
	envconf.Default(&c.ShutdownTimeout, DefaultShutdownTimeout)
	envconf.Default(&c.Concurrency, DefaultConcurrency)
	return c
}
