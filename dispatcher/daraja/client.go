// Package daraja is a client for Safaricom's Daraja M-Pesa Express API: the
// STK push, the STK query and the OAuth token both need.
//
// Every error it returns is an *Error whose Kind says what the failure means
// for money: whether the push may be sent again (KindTransient,
// KindLocked), must not be (KindAmbiguous: the customer may have been
// prompted), or is final (KindRefused). The client never retries a push on
// its own, except once after Daraja refused its access token, which means
// the push was not processed.
//
// How it reads each answer is in docs/DARAJA.md.
package daraja

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/redact"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

// Daraja's hosts.
const (
	SandboxURL    = "https://sandbox.safaricom.co.ke"
	ProductionURL = "https://api.safaricom.co.ke"
)

// Daraja's endpoints.
const (
	PathOAuth = "/oauth/v1/generate"
	PathPush  = "/mpesa/stkpush/v1/processrequest"
	PathQuery = "/mpesa/stkpushquery/v1/query"
)

// Transaction types: paybill, or till (buy goods: PartyB is the till).
const (
	TransactionPayBill  = "CustomerPayBillOnline"
	TransactionBuyGoods = "CustomerBuyGoodsOnline"
)

// Limits Daraja puts on a push.
const (
	MinAmount              = 1
	MaxAmount              = 250000
	MaxAccountReference    = 12
	MaxTransactionDesc     = 13
	DefaultTransactionDesc = "Payment"
)

// DefaultTimeout bounds every call (each OAuth, push or query round trip)
// when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Config configures a Client. Only HTTPClient, Now, Timeout,
// TransactionType and PartyB may be left zero.
type Config struct {
	BaseURL         string // e.g. SandboxURL; an absolute http(s) URL
	ConsumerKey     string
	ConsumerSecret  string // secret
	ShortCode       string // BusinessShortCode, 5–7 digits
	PassKey         string // secret
	TransactionType string // TransactionPayBill (default) or TransactionBuyGoods
	PartyB          string // the receiving paybill or till; default ShortCode for a paybill
	// HTTPClient sends the requests; nil means one with dial, TLS and
	// header timeouts that does not follow redirects.
	HTTPClient *http.Client
	// Tracer, when set, traces each request to Daraja with a client span
	// and sends its traceparent; nil is off.
	Tracer trace.Tracer
	// Now is the clock (for Timestamp and the token's expiry); nil means
	// time.Now.
	Now func() time.Time
	// Timeout bounds each round trip; zero means DefaultTimeout.
	Timeout time.Duration
	// MaxRPS bounds the calls to Daraja per second (pushes, queries and
	// OAuth token fetches together), so that a burst does not trip
	// Daraja's spike arrest; 0 means no bound. Every Client of this
	// process for the same BaseURL and ConsumerKey (one Daraja app) shares
	// one limiter: the dispatcher's and the reconciler's together stay
	// under it.
	MaxRPS float64
	// Metrics counts the calls to Daraja and the OAuth token fetches; nil:
	// not counted.
	Metrics *metrics.Registry
}

// LogValue shows the configuration with its secrets masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("base_url", redact.URLs(c.BaseURL)),
		slog.String("consumer_key", redact.Secret(c.ConsumerKey)),
		slog.String("consumer_secret", redact.Secret(c.ConsumerSecret)),
		slog.String("shortcode", c.ShortCode),
		slog.String("passkey", redact.Secret(c.PassKey)),
		slog.String("transaction_type", c.TransactionType),
		slog.String("party_b", c.PartyB),
		slog.Duration("timeout", c.Timeout),
		slog.Float64("max_rps", c.MaxRPS),
	)
}

// Client calls Daraja. It is safe for concurrent use; make one per set of
// credentials, so that its callers share one OAuth token.
type Client struct {
	cfg     Config
	base    string
	hc      *http.Client
	now     func() time.Time
	timeout time.Duration
	basic   string        // the Authorization header of the OAuth call: secret
	limit   *rate.Limiter // nil: no bound

	mu       sync.Mutex
	token    string    // secret
	expires  time.Time // when token must no longer be used
	fetching *tokenFetch
}

// New checks cfg and returns a client. It makes no call to Daraja.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("daraja: BaseURL: want an absolute http(s) URL")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("daraja: BaseURL: want a URL without credentials, query or fragment")
	}
	switch {
	case cfg.ConsumerKey == "":
		return nil, errors.New("daraja: ConsumerKey is empty")
	case strings.ContainsAny(cfg.ConsumerKey, ":\r\n"):
		// Basic authentication cannot carry a colon in the user part.
		return nil, errors.New("daraja: ConsumerKey must not contain ':' or a line break")
	case cfg.ConsumerSecret == "":
		return nil, errors.New("daraja: ConsumerSecret is empty")
	case !isDigits(cfg.ShortCode, 5, 7):
		return nil, errors.New("daraja: ShortCode must be 5 to 7 digits")
	case cfg.PassKey == "":
		return nil, errors.New("daraja: PassKey is empty")
	case strings.ContainsAny(cfg.PassKey, " \t\r\n"):
		return nil, errors.New("daraja: PassKey must not contain white space")
	case cfg.Timeout < 0:
		return nil, errors.New("daraja: Timeout must not be negative")
	case cfg.MaxRPS < 0 || math.IsNaN(cfg.MaxRPS) || math.IsInf(cfg.MaxRPS, 0):
		return nil, errors.New("daraja: MaxRPS must be 0 (no bound) or more")
	}
	switch cfg.TransactionType {
	case "":
		cfg.TransactionType = TransactionPayBill
	case TransactionPayBill, TransactionBuyGoods:
	default:
		return nil, fmt.Errorf("daraja: TransactionType: want %s or %s, got %q", TransactionPayBill, TransactionBuyGoods, cfg.TransactionType)
	}
	if cfg.PartyB == "" {
		if cfg.TransactionType == TransactionBuyGoods {
			return nil, errors.New("daraja: PartyB (the till number) is required for " + TransactionBuyGoods)
		}
		cfg.PartyB = cfg.ShortCode
	}
	if !isDigits(cfg.PartyB, 5, 10) {
		return nil, errors.New("daraja: PartyB must be 5 to 10 digits")
	}
	c := &Client{
		cfg:     cfg,
		base:    strings.TrimRight(u.String(), "/"),
		hc:      cfg.HTTPClient,
		now:     cfg.Now,
		timeout: cfg.Timeout,
		basic:   "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.ConsumerKey+":"+cfg.ConsumerSecret)),
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	if cfg.Metrics != nil {
		c.hc = instrumented(c.hc, cfg.Metrics)
	}
	if cfg.Tracer != nil {
		c.hc = tracing.Client(cfg.Tracer, c.hc)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if cfg.MaxRPS > 0 {
		c.limit = sharedLimiter(c.base, cfg.ConsumerKey, cfg.MaxRPS)
	}
	return c, nil
}

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = DefaultTimeout
	t.MaxIdleConnsPerHost = 64
	// Well under the keep-alive of common gateways: a push written on a
	// connection the server is closing can only be reported as ambiguous.
	t.IdleConnTimeout = 30 * time.Second
	return &http.Client{
		Transport: t,
		// A redirected POST would turn into a GET elsewhere: a redirect is
		// a misconfigured BaseURL, reported as the 3xx it is.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func isDigits(s string, minLen, maxLen int) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
