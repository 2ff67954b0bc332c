package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"
)

// Client defaults.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultTLSTimeout     = 5 * time.Second
	// DefaultTimeout bounds a whole delivery: connection, request and
	// answer. A receiver should answer at once and work afterwards.
	// 10 s: long for a receiver that should answer at once, and short
	// enough that a slow one holds a handler little.
	DefaultTimeout = 10 * time.Second
	// ExcerptBytes is how much of an answer's body is read and kept.
	ExcerptBytes = 4096
)

// ClientConfig configures a Client; zero fields take the defaults.
type ClientConfig struct {
	Policy         Policy
	Lookup         Lookup // nil: SystemLookup
	ConnectTimeout time.Duration
	TLSTimeout     time.Duration
	Timeout        time.Duration
	// TLS, when set, is the TLS configuration (tests: a test CA).
	TLS *tls.Config
}

// Client posts deliveries: it refuses a refused address at every connection
// (whatever the name resolved to at registration), follows no redirect
// (a 3xx is an answer, and a retry), uses no proxy from the environment
// (the proxy, not the Client, would choose the address) and reads at most
// ExcerptBytes of an answer.
type Client struct {
	hc      *http.Client
	timeout time.Duration
}

// NewClient makes a Client.
func NewClient(cfg ClientConfig) *Client {
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.TLSTimeout <= 0 {
		cfg.TLSTimeout = DefaultTLSTimeout
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Lookup == nil {
		cfg.Lookup = SystemLookup
	}
	tlsCfg := cfg.TLS
	if tlsCfg == nil {
		tlsCfg = &tls.Config{}
	}
	tlsCfg = tlsCfg.Clone()
	tlsCfg.MinVersion = max(tlsCfg.MinVersion, tls.VersionTLS12)
	d := &dialer{
		policy: cfg.Policy,
		lookup: cfg.Lookup,
		d:      net.Dialer{Timeout: cfg.ConnectTimeout, Control: cfg.Policy.control},
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.dial,
		TLSClientConfig:        tlsCfg,
		TLSHandshakeTimeout:    cfg.TLSTimeout,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        90 * time.Second,
		ForceAttemptHTTP2:      true,
	}
	return &Client{
		hc: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		timeout: cfg.Timeout,
	}
}

// dialer resolves a name itself and dials its allowed addresses one by one;
// the net.Dialer's Control checks each again as the socket connects.
type dialer struct {
	policy Policy
	lookup Lookup
	d      net.Dialer
}

func (d *dialer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else if addrs, err = d.lookup(ctx, host); err != nil {
		return nil, fmt.Errorf("%w %s: %w", errResolve, host, err)
	}
	var errs []error
	for _, a := range addrs {
		if err := d.policy.CheckAddr(a); err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := d.d.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%w %s: no address", errResolve, host)
	}
	return nil, errors.Join(errs...)
}

// Result is what came of one delivery attempt.
type Result struct {
	// Status is the answer's HTTP status; 0 when none came.
	Status  int
	Latency time.Duration
	// Excerpt is the start of the answer's body (ExcerptBytes at most,
	// valid UTF-8).
	Excerpt string
	// Err is why no answer came (refused address, timeout, connection):
	// the detail, for the worker's log; Describe(Err) is what is recorded.
	Err error
	// RetryAfter is the answer's Retry-After (seconds or a date), at most
	// MaxRetryAfter; 0 when none.
	RetryAfter time.Duration
}

// MaxRetryAfter bounds the wait a receiver may ask for with Retry-After.
const MaxRetryAfter = time.Hour

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		d = time.Duration(min(max(n, 0), int64(MaxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), MaxRetryAfter)
}

// Post sends body to target with header, within the Client's timeout.
func (c *Client) Post(ctx context.Context, target string, header http.Header, body []byte) Result {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return Result{Err: errRequest}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "stkgate-webhooks/1")
	resp, err := c.hc.Do(req)
	if err != nil {
		// Not the *url.Error itself: it repeats the URL, whose query may
		// hold the merchant's credential, into records and logs.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = fmt.Errorf("%s: %w", uerr.Op, uerr.Err)
		}
		return Result{Latency: time.Since(start), Err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, ExcerptBytes))
	return Result{Status: resp.StatusCode, Latency: time.Since(start), Excerpt: validUTF8(b),
		RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
}

// validUTF8 replaces invalid bytes, so the excerpt can be stored as text
// (a NUL byte too), then cuts it to ExcerptBytes on a rune's boundary: each
// replacement takes 3 bytes, so 4 KiB of NULs would become 12.
func validUTF8(b []byte) string {
	// Postgres text holds no NUL.
	b = bytes.ReplaceAll(b, []byte{0}, []byte(string(utf8.RuneError)))
	s := string(bytes.ToValidUTF8(b, []byte(string(utf8.RuneError))))
	if len(s) > ExcerptBytes {
		cut := ExcerptBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}
