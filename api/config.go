package api

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/stkgate/stkgate/events/kit/cidr"
	"github.com/stkgate/stkgate/events/kit/envconf"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/redact"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

// DispatchMode says when POST /api/stk-push answers.
type DispatchMode string

// Dispatch modes.
const (
	// ModeAsync answers 202 as soon as the request is durable in JetStream.
	ModeAsync DispatchMode = "async"
	// ModeSync waits until Daraja has answered the push (or SyncTimeout
	// passed) and answers with the record.
	ModeSync DispatchMode = "sync"
)

// Defaults of the settings that have one.
const (
	DefaultAddr           = ":8080"
	DefaultStreamReplicas = 1
	DefaultDispatchMode   = ModeAsync
	DefaultSyncTimeout    = 30 * time.Second
	DefaultStartTimeout   = 2 * time.Minute
	// MaxSyncTimeout bounds SYNC_TIMEOUT: Daraja answers a push in seconds,
	// and the HTTP write timeout grows with it.
	MaxSyncTimeout = 5 * time.Minute
)

// ClientToken is one API client and a token it authenticates with. A client
// may have several tokens (to rotate them); a token belongs to one client.
type ClientToken struct {
	Client string
	Token  string
}

// Config is everything the api needs. ConfigFromEnv fills it from the
// environment; the dev stack and tests may build it directly, and a zero
// Addr, StreamReplicas, DispatchMode, SyncTimeout, IdempotencyTTL or
// StartTimeout takes its default.
type Config struct {
	// Addr is where the API listens (API_ADDR).
	Addr string
	// Tokens are the development clients and their tokens (API_TOKENS,
	// name:token,…); optional, as production clients are kept in the
	// database (stkgate-admin).
	Tokens []ClientToken
	// DatabaseURL is the Postgres holding the read model (DATABASE_URL).
	DatabaseURL string
	// NATSURL is the NATS server, or a comma-separated list (NATS_URL).
	NATSURL string
	// StreamReplicas of the STK stream, created at start-up if missing
	// (NATS_STREAM_REPLICAS).
	StreamReplicas int
	// DispatchMode is async or sync (DISPATCH_MODE).
	DispatchMode DispatchMode
	// SyncTimeout is how long sync mode waits for Daraja's answer before
	// answering as async does (SYNC_TIMEOUT).
	SyncTimeout time.Duration
	// IdempotencyTTL is how long an Idempotency-Key of POST /api/stk-push
	// is kept from its first use (IDEMPOTENCY_TTL).
	IdempotencyTTL time.Duration
	// RateLimit is each client's sustained requests per second on /api
	// (API_RATE_LIMIT), with bursts of RateBurst (API_RATE_BURST); 0 means
	// no limit. Per api instance.
	RateLimit float64
	RateBurst int
	// PhoneMaxPrompts is how many requests a phone may receive per
	// PhoneWindow, across every client and api instance (PHONE_MAX_PROMPTS,
	// PHONE_WINDOW); 0 means no limit.
	PhoneMaxPrompts int
	PhoneWindow     time.Duration
	// AuthFailLimit is the failed authentications per second a source
	// address may make (API_AUTH_FAIL_LIMIT), with bursts of AuthFailBurst
	// (API_AUTH_FAIL_BURST); 0 means no limit. Per api instance.
	AuthFailLimit float64
	AuthFailBurst int
	// TrustedProxies are the networks of the proxies in front of the api
	// (API_TRUSTED_PROXIES): only from them is X-Forwarded-For believed
	// about a request's source address. Empty: the TCP peer.
	TrustedProxies []netip.Prefix
	// ClientMaxQueued is how many requests a client may have accepted and
	// not yet dispatched, across every api instance
	// (API_CLIENT_MAX_QUEUED); 0 means no limit.
	ClientMaxQueued int
	// WebhookDevMode (WEBHOOK_DEV_MODE, the webhooks worker's and
	// stkgate-admin's setting too) lets a request's callback_url be http
	// or loopback, as an endpoint's may be in the dev stack.
	WebhookDevMode bool
	// StartTimeout bounds start-up (database, stream), retried until then;
	// a migration under way runs to its end past it (store.Migrate). Not
	// read from the environment.
	StartTimeout time.Duration
	// ReadHeaderTimeout, ReadTimeout and IdleTimeout are the HTTP server's
	// (zero: 5s, 15s, 60s); WriteTimeout follows from ReadTimeout and
	// SyncTimeout. Not read from the environment; tests shorten them.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
	// Tracing is the OpenTelemetry tracing (OTEL_*; docs/TRACING.md); off
	// when no endpoint is set.
	Tracing tracing.Config
	// Logger receives the api's logs; nil means slog.Default().
	Logger *slog.Logger
	// AccessLogger receives the access lines below 500 (Options'); nil
	// means Logger. The binary's holds its lines for up to
	// service.AccessFlushInterval (service.Loggers).
	AccessLogger *slog.Logger
	// Metrics is where the api counts (metrics.Run makes it from
	// API_METRICS_ADDR); nil: metrics off.
	Metrics *metrics.Registry
}

// ConfigFromEnv reads API_ADDR (default :8080), API_TOKENS (optional; each
// token at least MinTokenLen bytes),
// DATABASE_URL and NATS_URL (required), NATS_STREAM_REPLICAS (1), DISPATCH_MODE (async),
// SYNC_TIMEOUT (30s), IDEMPOTENCY_TTL (24h), API_RATE_LIMIT (10), API_RATE_BURST
// (twice API_RATE_LIMIT), PHONE_MAX_PROMPTS (5), PHONE_WINDOW (1h),
// API_AUTH_FAIL_LIMIT (1), API_AUTH_FAIL_BURST (20), API_TRUSTED_PROXIES
// (none), API_CLIENT_MAX_QUEUED (1000) and WEBHOOK_DEV_MODE (false). It names
// every setting that is missing or malformed, and never repeats a token in its
// errors. A Config built directly has no limits unless it sets them.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	e := envconf.New(getenv)
	c := Config{
		Addr:           e.ListenAddr("API_ADDR", DefaultAddr),
		DatabaseURL:    e.Required("DATABASE_URL", "a Postgres URL such as postgres://user@host:5432/stkgate"),
		NATSURL:        e.NATSURL("NATS_URL", ""),
		StreamReplicas: e.Replicas("NATS_STREAM_REPLICAS", DefaultStreamReplicas),
		DispatchMode:   DispatchMode(e.OneOf("DISPATCH_MODE", string(DefaultDispatchMode), string(ModeAsync), string(ModeSync))),
		SyncTimeout:    e.Duration("SYNC_TIMEOUT", DefaultSyncTimeout, time.Nanosecond, MaxSyncTimeout),
		IdempotencyTTL: e.Duration("IDEMPOTENCY_TTL", DefaultIdempotencyTTL, MinIdempotencyTTL, MaxIdempotencyTTL),
	}
	// ParseTokens names API_TOKENS itself, and an entry by its position,
	// never by its token.
	tokens, err := ParseTokens(getenv("API_TOKENS"))
	if err == nil {
		err = CheckTokenLengths(tokens)
	}
	e.Add(err)
	c.Tokens = tokens
	limitsFromEnv(e, &c)
	authFromEnv(e, &c)
	c.Tracing = tracing.FromEnv(e, "api")
	c.WebhookDevMode = e.Bool("WEBHOOK_DEV_MODE", false)
	if err := e.Err(); err != nil {
		return Config{}, fmt.Errorf("api configuration: %w", err)
	}
	return c, nil
}

// check reports every invalid setting of a Config built directly (Run's
// withDefaults) but the tokens (checkTokens), named by its environment
// variable. ConfigFromEnv's reader holds the same bounds.
func (c Config) check() []error {
	var errs []error
	if _, port, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("API_ADDR: %q is not host:port", c.Addr))
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		errs = append(errs, fmt.Errorf("API_ADDR: %q has no valid port", c.Addr))
	}
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL: required"))
	}
	if c.NATSURL == "" {
		errs = append(errs, errors.New("NATS_URL: required"))
	} else if err := envconf.CheckNATSURL(c.NATSURL); err != nil {
		errs = append(errs, fmt.Errorf("NATS_URL: %w", err))
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		errs = append(errs, fmt.Errorf("NATS_STREAM_REPLICAS: %d is not from 1 to 5", c.StreamReplicas))
	}
	if c.DispatchMode != ModeAsync && c.DispatchMode != ModeSync {
		errs = append(errs, fmt.Errorf("DISPATCH_MODE: %q is neither async nor sync", c.DispatchMode))
	}
	if c.SyncTimeout <= 0 || c.SyncTimeout > MaxSyncTimeout {
		errs = append(errs, fmt.Errorf("SYNC_TIMEOUT: %s is not above 0 and at most %s", c.SyncTimeout, MaxSyncTimeout))
	}
	if c.IdempotencyTTL < MinIdempotencyTTL || c.IdempotencyTTL > MaxIdempotencyTTL {
		errs = append(errs, fmt.Errorf("IDEMPOTENCY_TTL: %s is not from %s to %s", c.IdempotencyTTL, MinIdempotencyTTL, MaxIdempotencyTTL))
	}
	errs = append(errs, c.checkLimits()...)
	if c.AuthFailLimit < 0 || math.IsNaN(c.AuthFailLimit) || math.IsInf(c.AuthFailLimit, 0) {
		errs = append(errs, fmt.Errorf("API_AUTH_FAIL_LIMIT: %v is not 0 (no limit) or more", c.AuthFailLimit))
	}
	if c.AuthFailLimit > 0 && (c.AuthFailBurst < 1 || c.AuthFailBurst > maxRateBurst) {
		errs = append(errs, fmt.Errorf("API_AUTH_FAIL_BURST: %d is not from 1 to %d", c.AuthFailBurst, maxRateBurst))
	}
	return errs
}

// authFromEnv reads API_AUTH_FAIL_LIMIT, API_AUTH_FAIL_BURST and
// API_TRUSTED_PROXIES. The burst is bounded only while there is a limit: a
// burst of 0 beside a limit of 0 is no mistake.
func authFromEnv(e *envconf.Env, c *Config) {
	c.AuthFailLimit = e.Float("API_AUTH_FAIL_LIMIT", DefaultAuthFailLimit, 0, math.Inf(1))
	lo, hi := 1, maxRateBurst
	if c.AuthFailLimit == 0 {
		lo, hi = math.MinInt, math.MaxInt
	}
	c.AuthFailBurst = e.Int("API_AUTH_FAIL_BURST", DefaultAuthFailBurst, lo, hi)
	c.TrustedProxies = e.CIDRs("API_TRUSTED_PROXIES", nil)
}

// withDefaults fills in the zero settings and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.StreamReplicas == 0 {
		c.StreamReplicas = DefaultStreamReplicas
	}
	if c.DispatchMode == "" {
		c.DispatchMode = DefaultDispatchMode
	}
	if c.SyncTimeout == 0 {
		c.SyncTimeout = DefaultSyncTimeout
	}
	if c.IdempotencyTTL == 0 {
		c.IdempotencyTTL = DefaultIdempotencyTTL
	}
	envconf.Default(&c.StartTimeout, DefaultStartTimeout)
	if c.RateLimit > 0 && c.RateBurst == 0 {
		c.RateBurst = defaultBurst(c.RateLimit)
	}
	if c.PhoneMaxPrompts > 0 && c.PhoneWindow == 0 {
		c.PhoneWindow = DefaultPhoneWindow
	}
	if c.AuthFailLimit > 0 && c.AuthFailBurst == 0 {
		c.AuthFailBurst = DefaultAuthFailBurst
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	errs := c.check()
	if err := checkTokens(c.Tokens); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("api configuration: %w", err)
	}
	return c, nil
}

// clientName is what a client may be called: it is stored with every record
// and appears in events and logs.
var clientName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ParseTokens reads API_TOKENS: name:token pairs separated by commas, white
// space around them ignored; empty, none. Entries that are all empty are
// refused, as a sign of a mistake. A name may appear with several tokens (to
// rotate them); a token may not be given to two clients. Errors name the
// entry by position, never by its token.
func ParseTokens(s string) ([]ClientToken, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []ClientToken
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue // a trailing comma, say
		}
		name, token, ok := strings.Cut(entry, ":")
		name, token = strings.TrimSpace(name), strings.TrimSpace(token)
		if !ok || name == "" || token == "" {
			return nil, fmt.Errorf("API_TOKENS: entry %d is not name:token", i+1)
		}
		out = append(out, ClientToken{Client: name, Token: token})
	}
	if len(out) == 0 {
		return nil, errors.New("API_TOKENS: no name:token entry (leave it empty for none)")
	}
	if err := checkTokens(out); err != nil {
		return nil, err
	}
	return out, nil
}

// MinTokenLen is the shortest API_TOKENS token taken outside the dev stack:
// 32 bytes, as openssl rand -base64 32 gives 44.
const MinTokenLen = 32

// CheckTokenLengths refuses every token shorter than MinTokenLen, naming
// the entry by position, never by its token. ConfigFromEnv applies it; the
// dev stack, whose dev-token reaches only its simulator, does not.
func CheckTokenLengths(tokens []ClientToken) error {
	var errs []error
	for i, t := range tokens {
		if len(t.Token) < MinTokenLen {
			errs = append(errs, fmt.Errorf("API_TOKENS: entry %d (client %s): the token is %d bytes long, not at least %d (openssl rand -base64 32 makes one)",
				i+1, t.Client, len(t.Token), MinTokenLen))
		}
	}
	return errors.Join(errs...)
}

func checkTokens(tokens []ClientToken) error {
	owner := make(map[string]string, len(tokens))
	for i, t := range tokens {
		if !clientName.MatchString(t.Client) {
			return fmt.Errorf("API_TOKENS: entry %d: client name %q is not 1 to 64 letters, digits, '.', '_' or '-'", i+1, t.Client)
		}
		// A header value cannot carry these, so such a token could never match.
		if t.Token == "" || strings.ContainsFunc(t.Token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
			return fmt.Errorf("API_TOKENS: entry %d (client %s): the token is empty or has white space", i+1, t.Client)
		}
		if other, dup := owner[t.Token]; dup {
			return fmt.Errorf("API_TOKENS: entry %d (client %s): the same token is given to %s", i+1, t.Client, other)
		}
		owner[t.Token] = t.Client
	}
	return nil
}

// LogValue shows the configuration without secrets: the client names but
// not their tokens, and the URLs with their passwords masked.
func (c Config) LogValue() slog.Value {
	var names []string
	for _, t := range c.Tokens {
		names = append(names, t.Client)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.String("clients", strings.Join(names, ",")),
		slog.Int("tokens", len(c.Tokens)),
		slog.String("database_url", redact.URLs(c.DatabaseURL)),
		slog.String("nats_url", redact.URLs(c.NATSURL)),
		slog.Any("tracing", c.Tracing),
		slog.Int("stream_replicas", c.StreamReplicas),
		slog.String("dispatch_mode", string(c.DispatchMode)),
		slog.Duration("sync_timeout", c.SyncTimeout),
		slog.Duration("idempotency_ttl", c.IdempotencyTTL),
		slog.Float64("rate_limit", c.RateLimit),
		slog.Int("rate_burst", c.RateBurst),
		slog.Int("phone_max_prompts", c.PhoneMaxPrompts),
		slog.Duration("phone_window", c.PhoneWindow),
		slog.Float64("auth_fail_limit", c.AuthFailLimit),
		slog.Int("auth_fail_burst", c.AuthFailBurst),
		slog.String("trusted_proxies", cidr.String(c.TrustedProxies)),
		slog.Int("client_max_queued", c.ClientMaxQueued),
		slog.Bool("webhook_dev_mode", c.WebhookDevMode),
	)
}
