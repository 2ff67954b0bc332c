package dispatcher

import (
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/envconf"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/redact"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

// Defaults of the settings that have one.
const (
	DefaultDarajaBaseURL   = daraja.SandboxURL
	DefaultShortCode       = daraja.SandboxShortCode
	DefaultTransactionType = TransactionPayBill
	// DefaultConcurrency: a client alone may use half the workers
	// (ClientMaxInFlight), and at API_RATE_LIMIT's default of 10 a second,
	// with Daraja answering in about a second and a half, it needs 15.
	DefaultConcurrency     = 32
	DefaultRetryMaxElapsed = 2 * time.Minute
	DefaultLockedWait      = daraja.RetryAfterLocked
	// DefaultUncertainRetryWindow is well inside the shortest time a prompt
	// stays open: the phone must show it and the customer answer it.
	DefaultUncertainRetryWindow = 2 * time.Second
	DefaultRetryInitial         = time.Second
	DefaultShutdownTimeout      = 30 * time.Second
	DefaultProgressEvery        = 10 * time.Second
	DefaultPhoneWait            = 3 * time.Second
	DefaultRecheckDelay         = 5 * time.Second
	// DefaultDeferAbove: Daraja's waits longer than this ("Quota Violation",
	// "Unable to lock subscriber": a minute) are spent in JetStream, so a
	// few busy phones cannot hold every worker.
	DefaultDeferAbove = 5 * time.Second
	// DefaultClientWait is the shortest wait in JetStream of a request
	// whose client is at its share of the workers. Short, so that a light
	// client that reaches its share for a moment is not held back long; a
	// flooding client's hand-backs are spread out anyway (shares).
	DefaultClientWait = 250 * time.Millisecond

	// SandboxPassKey is the passkey Safaricom publishes for the sandbox
	// shortcode 174379; it is no secret.
	SandboxPassKey = daraja.SandboxPassKey
)

// DefaultDarajaMaxRPS bounds the calls to Daraja per second (DARAJA_MAX_RPS).
const DefaultDarajaMaxRPS = daraja.DefaultMaxRPS

// Daraja's two transaction types: paybill, or till (buy goods, where PartyB
// is the till number).
const (
	TransactionPayBill  = daraja.TransactionPayBill
	TransactionBuyGoods = daraja.TransactionBuyGoods
)

// maxConcurrency bounds the workers: more than the dispatcher consumer's
// MaxAckPending would never all get a message, and most of it is kept for
// requests waiting for their phone.
const maxConcurrency = 1024

// Config is everything the dispatcher needs. ConfigFromEnv fills it from the
// environment; tests and the dev stack build it directly.
type Config struct {
	// NATSURL is the NATS server or a comma-separated list of servers.
	NATSURL string
	// StreamReplicas of the STK stream created at start-up.
	StreamReplicas int
	// Daraja configures the client; its secrets never reach a log line. Its
	// Timeout bounds each round trip of a push (default daraja.DefaultTimeout).
	Daraja daraja.Config
	// CallbackBaseURL is where Safaricom reaches callback-ingest; each push
	// names events.CallbackURL(CallbackBaseURL, trackingID, token).
	CallbackBaseURL string
	// CallbackSecrets sign the callback token of each push's CallBackURL
	// (CALLBACK_SECRET, "new,old,…": the first signs). Required.
	CallbackSecrets events.CallbackSecrets
	// Concurrency bounds the pushes in flight (DISPATCH_CONCURRENCY).
	Concurrency int
	// ClientMaxInFlight bounds the requests of one client worked on at once
	// (DISPATCH_CLIENT_MAX_IN_FLIGHT, default half of Concurrency). Its
	// share is less while other clients have requests in flight: the
	// workers divided by the clients at work plus one (see shares).
	ClientMaxInFlight int
	// RetryMaxElapsed bounds how long a push that cannot have reached the
	// customer is retried before the payment is completed as failed: no retry
	// starts later than this after the first attempt.
	RetryMaxElapsed time.Duration

	// The settings below are not read from the environment; zero means the
	// default. Tests shorten them.

	// RetryInitialInterval is the first backoff interval (default 1s).
	RetryInitialInterval time.Duration
	// LockedWait is the wait after "Unable to lock subscriber": the customer
	// has a prompt open, which lives about a minute (default 1m, the client's
	// daraja.RetryAfterLocked). A longer Retry-After from Daraja wins.
	LockedWait time.Duration
	// UncertainRetryWindow: after a push answered 503 (which may have been
	// processed and prompted the customer), a push of the same payment is
	// sent again only within this long of the 503'd push leaving, while a
	// prompt it opened must still be open, so that Daraja answers "Unable
	// to lock subscriber" rather than prompting twice; later, the payment
	// waits for its callback instead (default 2s; docs/DARAJA.md).
	UncertainRetryWindow time.Duration
	// ShutdownTimeout bounds how long in-flight pushes and their publishes
	// may finish after ctx is cancelled (default 30s).
	ShutdownTimeout time.Duration
	// ProgressInterval is how often a message being worked on is reported in
	// progress to JetStream, well inside the consumer's AckWait (default 10s).
	ProgressInterval time.Duration

	// PhoneLockTTL is how long a phone stays locked after the answer to the
	// last push to it when no stk.completed releases it (default events.PromptLifetime).
	// It is the STK_PHONES bucket's TTL, set when the bucket is created.
	PhoneLockTTL time.Duration
	// RecheckDelay is how long a request waits in JetStream before it is
	// looked at again when its attempt record or phone lock could not be
	// read or written, or another instance is on it (default 5s).
	RecheckDelay time.Duration
	// PhoneWait is how long a request for a busy phone waits in JetStream
	// before it looks at the phone again (default 3s).
	PhoneWait time.Duration

	// Tracing is the OpenTelemetry tracing (OTEL_*; docs/TRACING.md); off
	// when no endpoint is set.
	Tracing tracing.Config
	// Logger receives every log line; nil means slog.Default().
	Logger *slog.Logger
	// Metrics is where the dispatcher counts, its Daraja calls too
	// (metrics.Run makes it from DISPATCHER_METRICS_ADDR); nil: off.
	Metrics *metrics.Registry

	// tuneConsumer lets tests shorten the request consumer's AckWait.
	tuneConsumer func(*jetstream.ConsumerConfig)
	// maxDeliver is the request consumer's MaxDeliver, read at start-up.
	maxDeliver int
	// deferAbove: a wait Daraja asks for that is longer than this is spent
	// in JetStream (NakWithDelay) rather than in a worker (default
	// DefaultDeferAbove; tests may raise it).
	deferAbove time.Duration
	// clientWait is the shortest wait in JetStream of a request whose
	// client is at its share (default DefaultClientWait).
	clientWait time.Duration
	// queueStale is how long a request on a phone's waiting list may go
	// without looking at the phone before the requests after it ask whether
	// it still waits (default: derived from PhoneWait and the AckWait).
	queueStale time.Duration
	// queueGone is how long it may go unseen before the requests after it
	// pass it over whatever it says (default DefaultQueueGone).
	queueGone time.Duration
	// sendWithin bounds how long after its record says sending a push may
	// still leave (default sendWithin; tests shorten it, with the rest of
	// the clock).
	sendWithin time.Duration
	// answerGrace is how long after a push's call must be over its answer
	// may still be written down (default answerGrace; tests shorten it).
	answerGrace time.Duration
	// beforeSending, when set, is called before each push is recorded as
	// sending: tests change the record there, as a racing reconciler would.
	beforeSending func(trackingID string)
}

// DefaultQueueGone is how long a request on a phone's waiting list may go
// unseen before the requests after it no longer wait for it: longer than a
// request ever waits for its phone (DispatcherMaxDeliver looks, PhoneWait
// apart, after which it is given up).
const DefaultQueueGone = 2 * time.Hour

// ConfigFromEnv reads the configuration through getenv (os.Getenv in main):
// NATS_URL (required), NATS_STREAM_REPLICAS (1), the DARAJA_* settings
// (daraja.ConfigFromEnv), CALLBACK_BASE_URL and CALLBACK_SECRET (required),
// DISPATCH_CONCURRENCY (32), DISPATCH_CLIENT_MAX_IN_FLIGHT (half the
// concurrency) and DISPATCH_RETRY_MAX (2m). A missing required setting or a
// malformed one is an error naming the variable; every problem is reported
// at once.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	e := envconf.New(getenv)
	cfg := Config{
		NATSURL:         e.NATSURL("NATS_URL", ""),
		StreamReplicas:  e.Replicas("NATS_STREAM_REPLICAS", 1),
		Daraja:          daraja.ConfigFromEnv(e),
		CallbackBaseURL: callbackBaseFromEnv(e),
		CallbackSecrets: events.CallbackSecretsFromEnv(e),
		Concurrency:     e.Int("DISPATCH_CONCURRENCY", DefaultConcurrency, 1, maxConcurrency),
		RetryMaxElapsed: RetryMaxFromEnv(e),
	}
	cfg.ClientMaxInFlight = e.Int("DISPATCH_CLIENT_MAX_IN_FLIGHT", defaultClientMaxInFlight(cfg.Concurrency), 1, maxConcurrency)
	cfg.Tracing = tracing.FromEnv(e, "dispatcher")
	if err := e.Err(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// RetryMaxFromEnv reads DISPATCH_RETRY_MAX, the dispatcher's retry budget,
// which the reconciler's RECONCILE_REQUEST_DEADLINE must exceed.
func RetryMaxFromEnv(e *envconf.Env) time.Duration {
	return e.Duration("DISPATCH_RETRY_MAX", DefaultRetryMaxElapsed, time.Nanosecond, envconf.MaxDuration)
}

// defaultClientMaxInFlight is a client's share of concurrency workers when
// none is set: half.
func defaultClientMaxInFlight(concurrency int) int {
	return max(1, concurrency/2)
}

// checkCallbackBase checks a CallbackBaseURL built directly (Run) by
// CALLBACK_BASE_URL's rules.
func checkCallbackBase(base string) error {
	e := envconf.New(func(string) string { return base })
	callbackBaseFromEnv(e)
	return e.Err()
}

// callbackBaseFromEnv reads CALLBACK_BASE_URL and lowercases its host:
// Daraja has refused CallBackURLs with an uppercase host, and a host name
// is case-insensitive anyway.
func callbackBaseFromEnv(e *envconf.Env) string {
	const what = "the public URL where Safaricom reaches callback-ingest"
	base := e.HTTPURL("CALLBACK_BASE_URL", "", what)
	u, err := url.Parse(base)
	if err != nil || base == "" {
		return base
	}
	if u.User != nil {
		e.Failf("CALLBACK_BASE_URL", "the URL carries credentials; it must be %s, without credentials: Daraja sends none", what)
		return ""
	}
	u.Host = strings.ToLower(u.Host)
	return u.String()
}

// LogValue shows the configuration without its secrets: the consumer key and
// secret, the passkey and any password in a URL.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("nats_url", redact.URLs(c.NATSURL)),
		slog.Any("tracing", c.Tracing),
		slog.Int("stream_replicas", c.StreamReplicas),
		slog.String("daraja_base_url", redact.URLs(c.Daraja.BaseURL)),
		slog.String("daraja_consumer_key", redact.Secret(c.Daraja.ConsumerKey)),
		slog.String("daraja_consumer_secret", redact.Secret(c.Daraja.ConsumerSecret)),
		slog.String("daraja_shortcode", c.Daraja.ShortCode),
		slog.String("daraja_passkey", redact.Secret(c.Daraja.PassKey)),
		slog.String("daraja_transaction_type", c.Daraja.TransactionType),
		slog.String("daraja_party_b", c.Daraja.PartyB),
		slog.Float64("daraja_max_rps", c.Daraja.MaxRPS),
		slog.String("callback_base_url", redact.URLs(c.CallbackBaseURL)),
		slog.Any("callback_secret", c.CallbackSecrets),
		slog.Int("concurrency", c.Concurrency),
		slog.Int("client_max_in_flight", c.ClientMaxInFlight),
		slog.Duration("retry_max_elapsed", c.RetryMaxElapsed),
	)
}

// withDefaults fills the zero settings that have a default.
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	envconf.Default(&c.StreamReplicas, 1)
	envconf.Default(&c.Concurrency, DefaultConcurrency)
	if c.Concurrency > maxConcurrency {
		c.Concurrency = maxConcurrency
	}
	envconf.Default(&c.ClientMaxInFlight, defaultClientMaxInFlight(c.Concurrency))
	envconf.Default(&c.clientWait, DefaultClientWait)
	envconf.Default(&c.RetryMaxElapsed, DefaultRetryMaxElapsed)
	envconf.Default(&c.RetryInitialInterval, DefaultRetryInitial)
	envconf.Default(&c.LockedWait, DefaultLockedWait)
	envconf.Default(&c.UncertainRetryWindow, DefaultUncertainRetryWindow)
	envconf.Default(&c.ShutdownTimeout, DefaultShutdownTimeout)
	envconf.Default(&c.ProgressInterval, DefaultProgressEvery)
	envconf.Default(&c.PhoneLockTTL, events.PromptLifetime)
	envconf.Default(&c.RecheckDelay, DefaultRecheckDelay)
	envconf.Default(&c.PhoneWait, DefaultPhoneWait)
	envconf.Default(&c.deferAbove, DefaultDeferAbove)
	return c
}

// ProductionHost is Daraja's production host; the sandbox is
// sandbox.safaricom.co.ke.
const ProductionHost = daraja.ProductionHost

// IsLoopbackURL reports whether raw names a loopback host (daraja.IsLoopbackURL).
func IsLoopbackURL(raw string) bool { return daraja.IsLoopbackURL(raw) }
