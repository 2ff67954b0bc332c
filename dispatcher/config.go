package dispatcher

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/redact"
)

// Defaults of the settings that have one.
const (
	DefaultDarajaBaseURL   = "https://sandbox.safaricom.co.ke"
	DefaultShortCode       = "174379"
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
	SandboxPassKey = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
)

// DefaultDarajaMaxRPS bounds the calls to Daraja per second (DARAJA_MAX_RPS).
const DefaultDarajaMaxRPS = 20.0

// maxDarajaMaxRPS bounds DARAJA_MAX_RPS: beyond it the bound is none.
const maxDarajaMaxRPS = 10000

// Daraja's two transaction types: paybill, or till (buy goods, where PartyB
// is the till number).
const (
	TransactionPayBill  = "CustomerPayBillOnline"
	TransactionBuyGoods = "CustomerBuyGoodsOnline"
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

	// PhoneLockTTL is how long a phone stays locked after the last push to
	// it when no stk.completed releases it (default events.PromptLifetime).
	// It is the STK_PHONES bucket's TTL, set when the bucket is created.
	PhoneLockTTL time.Duration
	// RecheckDelay is how long a request waits in JetStream before it is
	// looked at again when its attempt record or phone lock could not be
	// read or written, or another instance is on it (default 5s).
	RecheckDelay time.Duration
	// PhoneWait is how long a request for a busy phone waits in JetStream
	// before it looks at the phone again (default 3s).
	PhoneWait time.Duration

	// Logger receives every log line; nil means slog.Default().
	Logger *slog.Logger

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
	// beforeSending, when set, is called before each push is recorded as
	// sending: tests change the record there, as a racing reconciler would.
	beforeSending func(trackingID string)
}

// DefaultQueueGone is how long a request on a phone's waiting list may go
// unseen before the requests after it no longer wait for it: longer than a
// request ever waits for its phone (DispatcherMaxDeliver looks, PhoneWait
// apart, after which it is given up).
const DefaultQueueGone = 2 * time.Hour

// ConfigFromEnv reads the configuration through getenv (os.Getenv in main).
// A missing required setting or a malformed one is an error naming the
// variable; every problem is reported at once.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	get := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}

	cfg := Config{
		NATSURL:         get("NATS_URL", ""),
		StreamReplicas:  1,
		Concurrency:     DefaultConcurrency,
		RetryMaxElapsed: DefaultRetryMaxElapsed,
	}
	if cfg.NATSURL == "" {
		bad("NATS_URL", "required")
	} else if err := checkNATSURL(cfg.NATSURL); err != nil {
		bad("NATS_URL", "%v", err)
	}
	if v := get("NATS_STREAM_REPLICAS", ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 5 {
			bad("NATS_STREAM_REPLICAS", "want a whole number from 1 to 5, got %q", v)
		}
		cfg.StreamReplicas = n
	}

	base, err := parseHTTPURL(get("DARAJA_BASE_URL", DefaultDarajaBaseURL))
	if err != nil {
		bad("DARAJA_BASE_URL", "%v", err)
	}
	cfg.Daraja.BaseURL = strings.TrimRight(base, "/")
	if err == nil && strings.HasPrefix(strings.ToLower(base), "http:") && !IsLoopbackURL(base) {
		bad("DARAJA_BASE_URL", "must be https (http only on loopback, where a simulator runs)")
	}

	cfg.Daraja.ConsumerKey = get("DARAJA_CONSUMER_KEY", "")
	if cfg.Daraja.ConsumerKey == "" {
		bad("DARAJA_CONSUMER_KEY", "required")
	}
	cfg.Daraja.ConsumerSecret = get("DARAJA_CONSUMER_SECRET", "")
	if cfg.Daraja.ConsumerSecret == "" {
		bad("DARAJA_CONSUMER_SECRET", "required")
	}

	cfg.Daraja.ShortCode = get("DARAJA_SHORTCODE", DefaultShortCode)
	if !digits(cfg.Daraja.ShortCode, 5, 7) {
		// Not echoed: a wrong value may be a secret pasted in the wrong place.
		bad("DARAJA_SHORTCODE", "want 5 to 7 digits")
	}
	cfg.Daraja.PassKey = get("DARAJA_PASSKEY", SandboxPassKey)
	if strings.ContainsAny(cfg.Daraja.PassKey, " \t\r\n") {
		bad("DARAJA_PASSKEY", "contains white space")
	}

	if host := darajaHost(cfg.Daraja.BaseURL); host == ProductionHost {
		// The defaults are the sandbox's: taken by production, they fail
		// every push, or push for someone else's paybill.
		if cfg.Daraja.ShortCode == DefaultShortCode {
			bad("DARAJA_SHORTCODE", "%s is the sandbox's shortcode; %s is production: set your own", DefaultShortCode, host)
		}
		if cfg.Daraja.PassKey == SandboxPassKey {
			bad("DARAJA_PASSKEY", "the sandbox's published passkey; %s is production: set your own", host)
		}
	}

	cfg.Daraja.TransactionType = get("DARAJA_TRANSACTION_TYPE", DefaultTransactionType)
	switch cfg.Daraja.TransactionType {
	case TransactionPayBill, TransactionBuyGoods:
	default:
		bad("DARAJA_TRANSACTION_TYPE", "want %s or %s, got %q", TransactionPayBill, TransactionBuyGoods, cfg.Daraja.TransactionType)
	}
	cfg.Daraja.PartyB = get("DARAJA_PARTY_B", cfg.Daraja.ShortCode)
	if !digits(cfg.Daraja.PartyB, 5, 10) {
		bad("DARAJA_PARTY_B", "want 5 to 10 digits (the shortcode or till number)")
	}

	cfg.CallbackBaseURL = get("CALLBACK_BASE_URL", "")
	if cfg.CallbackBaseURL == "" {
		bad("CALLBACK_BASE_URL", "required: the public URL where Safaricom reaches callback-ingest")
	} else if u, err := parseCallbackBase(cfg.CallbackBaseURL); err != nil {
		bad("CALLBACK_BASE_URL", "%v", err)
	} else {
		cfg.CallbackBaseURL = u
	}

	if s, err := events.ParseCallbackSecrets(getenv("CALLBACK_SECRET")); err != nil {
		bad("CALLBACK_SECRET", "%v", err)
	} else {
		cfg.CallbackSecrets = s
	}

	if v := get("DISPATCH_CONCURRENCY", ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxConcurrency {
			bad("DISPATCH_CONCURRENCY", "want a whole number from 1 to %d, got %q", maxConcurrency, v)
		}
		cfg.Concurrency = n
	}
	if v := get("DISPATCH_CLIENT_MAX_IN_FLIGHT", ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxConcurrency {
			bad("DISPATCH_CLIENT_MAX_IN_FLIGHT", "want a whole number from 1 to %d, got %q", maxConcurrency, v)
		}
		cfg.ClientMaxInFlight = n
	} else {
		cfg.ClientMaxInFlight = max(1, cfg.Concurrency/2)
	}
	if v := get("DISPATCH_RETRY_MAX", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			bad("DISPATCH_RETRY_MAX", "want a positive duration such as 2m, got %q", v)
		}
		cfg.RetryMaxElapsed = d
	}

	cfg.Daraja.MaxRPS = DefaultDarajaMaxRPS
	if v := get("DARAJA_MAX_RPS", ""); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f >= 0 && f <= maxDarajaMaxRPS) {
			bad("DARAJA_MAX_RPS", "want calls per second from 0 (no bound) to %d, such as 20, got %q", maxDarajaMaxRPS, v)
		}
		cfg.Daraja.MaxRPS = f
	}

	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

// LogValue shows the configuration without its secrets: the consumer key and
// secret, the passkey and any password in a URL.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("nats_url", redact.URLs(c.NATSURL)),
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
	if c.StreamReplicas < 1 {
		c.StreamReplicas = 1
	}
	if c.Concurrency < 1 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Concurrency > maxConcurrency {
		c.Concurrency = maxConcurrency
	}
	if c.ClientMaxInFlight < 1 {
		c.ClientMaxInFlight = max(1, c.Concurrency/2)
	}
	if c.clientWait <= 0 {
		c.clientWait = DefaultClientWait
	}
	if c.RetryMaxElapsed <= 0 {
		c.RetryMaxElapsed = DefaultRetryMaxElapsed
	}
	if c.RetryInitialInterval <= 0 {
		c.RetryInitialInterval = DefaultRetryInitial
	}
	if c.LockedWait <= 0 {
		c.LockedWait = DefaultLockedWait
	}
	if c.UncertainRetryWindow <= 0 {
		c.UncertainRetryWindow = DefaultUncertainRetryWindow
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = DefaultProgressEvery
	}
	if c.PhoneLockTTL <= 0 {
		c.PhoneLockTTL = events.PromptLifetime
	}
	if c.RecheckDelay <= 0 {
		c.RecheckDelay = DefaultRecheckDelay
	}
	if c.PhoneWait <= 0 {
		c.PhoneWait = DefaultPhoneWait
	}
	if c.deferAbove <= 0 {
		c.deferAbove = DefaultDeferAbove
	}
	return c
}

func checkNATSURL(list string) error {
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil || u.Host == "" {
			// Not echoed: a malformed URL may hide a password.
			return errors.New("want nats://host:port (comma-separated for several)")
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("scheme %q: want nats, tls, ws or wss", u.Scheme)
		}
	}
	return nil
}

// ProductionHost is Daraja's production host; the sandbox is
// sandbox.safaricom.co.ke.
const ProductionHost = "api.safaricom.co.ke"

// darajaHost is the lowercased host name of base, "" if it has none.
func darajaHost(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
}

// IsLoopbackURL reports whether raw names a loopback host (localhost,
// 127.0.0.0/8 or ::1): one only this machine can answer, such as a Daraja
// simulator.
func IsLoopbackURL(raw string) bool {
	host := darajaHost(raw)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func parseHTTPURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("want an absolute http(s) URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("want a URL without query or fragment")
	}
	return s, nil
}

// parseCallbackBase checks the callback base and lowercases its host:
// Daraja has refused CallBackURLs with an uppercase host, and a host name is
// case-insensitive anyway.
func parseCallbackBase(s string) (string, error) {
	if _, err := parseHTTPURL(s); err != nil {
		return "", err
	}
	u, _ := url.Parse(s)
	if u.User != nil {
		return "", errors.New("must not carry credentials: Daraja sends none")
	}
	u.Host = strings.ToLower(u.Host)
	return u.String(), nil
}

func digits(s string, minLen, maxLen int) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
