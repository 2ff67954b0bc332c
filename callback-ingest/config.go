package callback

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/cidr"
	"github.com/stkgate/stkgate/events/kit/envconf"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/redact"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

// Config is what the service needs to run.
type Config struct {
	// Addr is where Safaricom's callbacks arrive (CALLBACK_ADDR).
	Addr string
	// NATSURL is the NATS server list, comma-separated (NATS_URL).
	NATSURL string
	// StreamReplicas of the STK stream (NATS_STREAM_REPLICAS).
	StreamReplicas int
	// Secrets verify the callback token of each CallBackURL
	// (CALLBACK_SECRET, "new,old,…": any may have signed it). Required.
	Secrets events.CallbackSecrets
	// Sources is the optional source allowlist (CALLBACK_ALLOW_CIDRS,
	// CALLBACK_TRUSTED_PROXIES).
	Sources SourcePolicy
	// Confirm says which success callbacks wait for Daraja's STK query
	// (CALLBACK_CONFIRM: ConfirmMismatch, ConfirmAlways, ConfirmNever).
	Confirm string
	// FastFailure: a failure callback that comes within this time of its
	// push is held for Daraja's STK query (CALLBACK_FAST_FAILURE, default
	// DefaultFastFailure; 0 holds none).
	FastFailure time.Duration
	// ApplyAfter is the HTTP handler's head start over the applier
	// (CALLBACK_APPLY_AFTER, default DefaultApplyAfter): how long after a
	// callback was kept the applier looks at it.
	ApplyAfter time.Duration
	// Tracing is the OpenTelemetry tracing (OTEL_*; docs/TRACING.md); off
	// when no endpoint is set.
	Tracing tracing.Config
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Metrics is where callback-ingest counts (metrics.Run makes it from
	// CALLBACK_METRICS_ADDR); nil: off.
	Metrics *metrics.Registry
	// ReadHeaderTimeout, ReadTimeout and IdleTimeout are the HTTP server's
	// against slow clients (zero: 5s, 10s, 60s). Not read from the
	// environment; tests shorten them.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
}

// Defaults.
const (
	DefaultAddr           = ":8081"
	DefaultStreamReplicas = 1
)

// maxFastFailure bounds CALLBACK_FAST_FAILURE: a customer can answer a prompt
// well within a minute, and a bound that long would send most genuine
// failures to Daraja's STK query.
const maxFastFailure = time.Minute

// ConfigFromEnv reads the configuration; it refuses every missing or
// malformed setting and names each.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	e := envconf.New(getenv)
	cfg := Config{
		Addr:           e.ListenAddr("CALLBACK_ADDR", DefaultAddr),
		NATSURL:        e.NATSURL("NATS_URL", ""),
		StreamReplicas: e.Replicas("NATS_STREAM_REPLICAS", DefaultStreamReplicas),
		Secrets:        events.CallbackSecretsFromEnv(e),
		Sources: SourcePolicy{
			Allow:          e.CIDRs("CALLBACK_ALLOW_CIDRS", nil),
			TrustedProxies: e.CIDRs("CALLBACK_TRUSTED_PROXIES", nil),
		},
		Confirm:     e.OneOf("CALLBACK_CONFIRM", ConfirmMismatch, ConfirmMismatch, ConfirmAlways, ConfirmNever),
		ApplyAfter:  e.Duration("CALLBACK_APPLY_AFTER", DefaultApplyAfter, time.Nanosecond, envconf.MaxDuration),
		FastFailure: e.Duration("CALLBACK_FAST_FAILURE", DefaultFastFailure, 0, maxFastFailure),
	}
	cfg.Tracing = tracing.FromEnv(e, "callback-ingest")
	if err := e.Err(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// validate checks a Config built directly (Run); ConfigFromEnv's reader
// holds the same rules.
func (c Config) validate() error {
	// An empty host means every interface.
	_, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("CALLBACK_ADDR: %q is not host:port", c.Addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("CALLBACK_ADDR: %q has no valid port", c.Addr)
	}
	if c.NATSURL == "" {
		return errors.New("NATS_URL: required")
	}
	if err := envconf.CheckNATSURL(c.NATSURL); err != nil {
		return fmt.Errorf("NATS_URL: %w", err)
	}
	// JetStream allows 1 to 5 replicas.
	if c.StreamReplicas < 1 || c.StreamReplicas > envconf.MaxReplicas {
		return fmt.Errorf("NATS_STREAM_REPLICAS: %d is not between 1 and 5", c.StreamReplicas)
	}
	if c.Secrets.Len() == 0 {
		return errors.New("CALLBACK_SECRET: required: at least one secret of 32 bytes or more")
	}
	switch c.Confirm {
	case ConfirmMismatch, ConfirmAlways, ConfirmNever:
	default:
		return fmt.Errorf("CALLBACK_CONFIRM: %q is not mismatch, always or never", c.Confirm)
	}
	return nil
}

// LogValue shows the configuration with the credentials a NATS URL may
// carry (user:password@ or token@) hidden.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.String("nats_url", redact.URLs(c.NATSURL)),
		slog.Any("tracing", c.Tracing),
		slog.Int("stream_replicas", c.StreamReplicas),
		slog.Any("callback_secret", c.Secrets),
		slog.String("allow_cidrs", cidr.String(c.Sources.Allow)),
		slog.String("trusted_proxies", cidr.String(c.Sources.TrustedProxies)),
		slog.String("confirm", c.Confirm),
		slog.String("fast_failure", c.FastFailure.String()),
		slog.String("apply_after", cmp.Or(c.ApplyAfter, DefaultApplyAfter).String()),
	)
}
