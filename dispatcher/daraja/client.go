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
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

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

// maxBody bounds how much of an answer is read: Daraja's are tiny, a
// gateway page a few KiB.
const maxBody = 1 << 20

// tokenMargin is how long before its announced expiry a token is replaced,
// so that a token never expires between the check and Daraja's reading it.
const tokenMargin = time.Minute

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

// tokenFetch is one OAuth call that every caller needing a token waits on.
type tokenFetch struct {
	done  chan struct{}
	token string
	err   error
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

// limiters are the outbound limiters of this process, one per Daraja app.
var limiters = struct {
	mu sync.Mutex
	m  map[[2]string]*rate.Limiter
}{m: map[[2]string]*rate.Limiter{}}

// sharedLimiter is the limiter of the app (base, consumerKey), made on
// first use; of two rates asked for, the lower holds. Its burst is one:
// Daraja's spike arrest counts in slices of a second, so calls are spaced
// evenly rather than let through in bursts.
func sharedLimiter(base, consumerKey string, perSecond float64) *rate.Limiter {
	limiters.mu.Lock()
	defer limiters.mu.Unlock()
	k := [2]string{base, consumerKey}
	l := limiters.m[k]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(perSecond), 1)
		limiters.m[k] = l
	} else if rate.Limit(perSecond) < l.Limit() {
		l.SetLimit(rate.Limit(perSecond))
	}
	return l
}

// wait waits for a slot under MaxRPS, as long as ctx allows. Its error
// means nothing was sent.
func (c *Client) wait(ctx context.Context, op string) error {
	if c.limit == nil {
		return nil
	}
	if err := c.limit.Wait(ctx); err != nil {
		e := transportError(ctx, op, err, false)
		if e.Kind != KindCanceled {
			e.Message = "not sent: no slot under the outbound rate limit (MaxRPS) in time"
		}
		return e
	}
	return nil
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

// PushRequest is one STK push: prompt Phone to pay Amount.
type PushRequest struct {
	Phone            string // 254XXXXXXXXX: 12 digits, 2547… or 2541…
	Amount           int64  // whole shillings, MinAmount…MaxAmount
	AccountReference string // 1–12 characters, shown to the customer
	TransactionDesc  string // optional; cut to 13 characters; default DefaultTransactionDesc
	CallbackURL      string // absolute http(s) URL with a lowercase host
	// SendBy, when set, is the latest the push may leave (wall clock): a
	// push that waits past it (for a slot under MaxRPS, for a token, for a
	// new token after a refused one, for its connection) is not sent, and
	// Push returns an *Error matching ErrSendByPassed.
	SendBy time.Time
}

// PushResponse is Daraja's acceptance of a push. The outcome comes later,
// in the callback or from Query.
type PushResponse struct {
	MerchantRequestID   string
	CheckoutRequestID   string
	ResponseCode        string
	ResponseDescription string
	CustomerMessage     string
}

// QueryResult is Daraja's answer to an STK query. ResultCode is always a
// string ("0", "1032", …); decide on it, not on ResultDesc.
type QueryResult struct {
	ResponseCode        string
	ResponseDescription string
	MerchantRequestID   string
	CheckoutRequestID   string
	ResultCode          string
	ResultDesc          string
}

// pushBody is the push request as Daraja documents it, in its field order.
type pushBody struct {
	BusinessShortCode string
	Password          string
	Timestamp         string
	TransactionType   string
	Amount            int64
	PartyA            string
	PartyB            string
	PhoneNumber       string
	CallBackURL       string
	AccountReference  string
	TransactionDesc   string
}

type queryBody struct {
	BusinessShortCode string
	Password          string
	Timestamp         string
	CheckoutRequestID string
}

// Push asks Daraja to prompt the customer. It checks req first and refuses
// (KindRefused, CodeInvalidRequest) what Daraja would refuse, without
// calling it. A nil error means Daraja accepted the push (ResponseCode "0").
// Push never sends the push twice, except once after Daraja refused the
// access token.
func (c *Client) Push(ctx context.Context, req PushRequest) (PushResponse, error) {
	if err := checkPush(&req); err != nil {
		return PushResponse{}, err
	}
	build := func() ([]byte, error) {
		ts := Timestamp(c.now())
		return marshal(pushBody{
			BusinessShortCode: c.cfg.ShortCode,
			Password:          Password(c.cfg.ShortCode, c.cfg.PassKey, ts),
			Timestamp:         ts,
			TransactionType:   c.cfg.TransactionType,
			Amount:            req.Amount,
			PartyA:            req.Phone,
			PartyB:            c.cfg.PartyB,
			PhoneNumber:       req.Phone,
			CallBackURL:       req.CallbackURL,
			AccountReference:  req.AccountReference,
			TransactionDesc:   req.TransactionDesc,
		})
	}
	var resp PushResponse
	err := c.call(ctx, opPush, PathPush, req.SendBy, build, func(status int, h http.Header, body []byte) error {
		var err error
		resp, err = decodePush(status, h, body)
		return err
	})
	return resp, err
}

// Query asks Daraja for the outcome of a push. A nil error means the
// outcome is final: ResultCode says which. While the customer has not
// answered, the error matches ErrStillProcessing (the result is filled when
// Daraja answered with ResultCode 4999); for an id Daraja does not know, it
// matches ErrUnknownTransaction. Queries may be repeated freely.
func (c *Client) Query(ctx context.Context, checkoutRequestID string) (QueryResult, error) {
	if checkoutRequestID == "" || strings.ContainsFunc(checkoutRequestID, unicode.IsControl) {
		return QueryResult{}, invalid(opQuery, "CheckoutRequestID is empty or malformed")
	}
	build := func() ([]byte, error) {
		ts := Timestamp(c.now())
		return marshal(queryBody{
			BusinessShortCode: c.cfg.ShortCode,
			Password:          Password(c.cfg.ShortCode, c.cfg.PassKey, ts),
			Timestamp:         ts,
			CheckoutRequestID: checkoutRequestID,
		})
	}
	var res QueryResult
	err := c.call(ctx, opQuery, PathQuery, time.Time{}, build, func(status int, h http.Header, body []byte) error {
		var err error
		res, err = decodeQuery(status, h, body)
		return err
	})
	return res, err
}

// checkPush refuses what Daraja refuses, and fills TransactionDesc.
func checkPush(r *PushRequest) error {
	if !isDigits(r.Phone, 12, 12) || !(strings.HasPrefix(r.Phone, "2547") || strings.HasPrefix(r.Phone, "2541")) {
		return invalid(opPush, "Invalid PhoneNumber: want 12 digits 2547XXXXXXXX or 2541XXXXXXXX")
	}
	if r.Amount < MinAmount || r.Amount > MaxAmount {
		return invalid(opPush, "Invalid Amount: want a whole number from %d to %d, got %d", MinAmount, MaxAmount, r.Amount)
	}
	if n := utf8.RuneCountInString(r.AccountReference); n < 1 || n > MaxAccountReference ||
		!utf8.ValidString(r.AccountReference) || strings.ContainsFunc(r.AccountReference, unicode.IsControl) ||
		strings.TrimSpace(r.AccountReference) == "" {
		return invalid(opPush, "Invalid AccountReference: want 1 to %d printable characters", MaxAccountReference)
	}
	desc := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(r.TransactionDesc, ""))
	desc = strings.TrimSpace(desc)
	if utf8.RuneCountInString(desc) > MaxTransactionDesc {
		desc = strings.TrimSpace(string([]rune(desc)[:MaxTransactionDesc]))
	}
	if desc == "" {
		desc = DefaultTransactionDesc
	}
	r.TransactionDesc = desc
	if err := checkCallbackURL(r.CallbackURL); err != nil {
		return invalid(opPush, "Invalid CallBackURL: %s", err)
	}
	return nil
}

func checkCallbackURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Opaque != "":
		return errors.New("want an absolute http(s) URL")
	case u.User != nil:
		return errors.New("must not carry credentials")
	case u.Fragment != "":
		return errors.New("must not have a fragment")
	case u.Host != strings.ToLower(u.Host):
		// Daraja has refused CallBackURLs with an uppercase host.
		return errors.New("the host must be lowercase")
	case strings.Contains(strings.ToLower(s), "mpesa"):
		// Daraja is reported to refuse URLs naming M-Pesa.
		return errors.New(`must not contain "mpesa"`)
	case strings.ContainsAny(s, " \t\r\n"):
		return errors.New("must not contain white space")
	}
	return nil
}

// marshal encodes without escaping &, < and > so the body reads as Daraja's
// documentation writes it.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// decoder reads one answer: status, headers and (at most maxBody of) body.
type decoder func(status int, h http.Header, body []byte) error

// call makes an authenticated POST. If Daraja refuses the access token, it
// fetches a new one and sends the request once more: a refused token means
// the request was not processed. A request with a sendBy (zero: none) is
// not sent after it (PushRequest.SendBy).
func (c *Client) call(ctx context.Context, op, path string, sendBy time.Time, build func() ([]byte, error), decode decoder) error {
	for attempt := 0; ; attempt++ {
		tctx, cancel := untilSendBy(ctx, sendBy)
		tok, err := c.accessToken(tctx)
		// Read before cancel, which ends tctx whatever happened.
		late := tctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil {
			if late {
				return sendByPassed(op)
			}
			return tokenError(ctx, op, err)
		}
		body, err := build()
		if err != nil {
			return &Error{Op: op, Kind: KindRefused, Code: CodeInvalidRequest, Message: "encoding the request", err: err}
		}
		err = c.post(ctx, op, path, tok, body, sendBy, decode)
		var e *Error
		if attempt == 0 && errors.As(err, &e) && e.invalidToken {
			c.dropToken(tok)
			continue
		}
		return err
	}
}

// untilSendBy is ctx bounded by sendBy, when there is one.
func untilSendBy(ctx context.Context, sendBy time.Time) (context.Context, context.CancelFunc) {
	if sendBy.IsZero() {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, sendBy)
}

// post sends one request, once MaxRPS allows, and decodes its answer. A
// request with a sendBy is given up, unsent, when it could not be written
// by then.
func (c *Client) post(parent context.Context, op, path, tok string, body []byte, sendBy time.Time, decode decoder) error {
	wctx, wcancel := untilSendBy(parent, sendBy)
	err := c.wait(wctx, op)
	wcancel()
	if err != nil {
		// The limiter fails at once when the slot would come after the
		// deadline; sendBy's, unless the caller's own comes first.
		if d, ok := parent.Deadline(); parent.Err() == nil && !sendBy.IsZero() && (!ok || sendBy.Before(d)) {
			return sendByPassed(op)
		}
		return err
	}
	ctx, cancel := context.WithTimeout(parent, c.timeout)
	defer cancel()
	var sent atomic.Bool
	if !sendBy.IsZero() {
		if !time.Now().Before(sendBy) {
			return sendByPassed(op)
		}
		// Not written by sendBy (a slow connection): given up. Written
		// meanwhile, it runs its course.
		var late context.CancelCauseFunc
		ctx, late = context.WithCancelCause(ctx)
		stop := time.AfterFunc(time.Until(sendBy), func() {
			if !sent.Load() {
				late(ErrSendByPassed)
			}
		})
		defer stop.Stop()
		defer late(nil)
	}
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				sent.Store(true)
			}
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return &Error{Op: op, Kind: KindRefused, Code: CodeInvalidRequest, Message: "building the request", err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	err = c.roundTrip(parent, op, req, &sent, decode)
	if err != nil && !sent.Load() && errors.Is(context.Cause(ctx), ErrSendByPassed) {
		return sendByPassed(op)
	}
	return err
}

// roundTrip sends req and hands the answer to decode. sent is set by the
// request's trace once the request has been written.
func (c *Client) roundTrip(parent context.Context, op string, req *http.Request, sent *atomic.Bool, decode decoder) error {
	resp, err := c.hc.Do(req)
	if err != nil {
		return transportError(parent, op, err, sent.Load())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			// An accepted request whose answer was lost on the way.
			e := transportError(parent, op, err, true)
			e.HTTPStatus = resp.StatusCode
			if e.Kind != KindCanceled && op == opOAuth {
				e.Kind = KindTransient
			}
			return e
		}
		// The status alone says enough; a partial body is read as a page.
		body = nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody)) // lets the connection be reused
	return decode(resp.StatusCode, resp.Header, body)
}

// accessToken returns a valid token, fetching one when there is none or it
// is about to expire. Concurrent callers share one fetch; each waits for it
// only as long as its own ctx allows.
func (c *Client) accessToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	if c.token != "" && c.now().Before(c.expires) {
		tok := c.token
		c.mu.Unlock()
		return tok, nil
	}
	f := c.fetching
	if f == nil {
		f = &tokenFetch{done: make(chan struct{})}
		c.fetching = f
		// The fetch outlives a caller that gives up, so the callers still
		// waiting get its token; it is bounded by c.timeout.
		go c.fetchToken(context.WithoutCancel(ctx), f)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		return "", transportError(ctx, opOAuth, ctx.Err(), false)
	}
}

func (c *Client) fetchToken(ctx context.Context, f *tokenFetch) {
	start := c.now()
	tok, ttl, err := c.oauth(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		margin := tokenMargin
		if ttl < 4*margin {
			// A short-lived token (a test server's) still gets used.
			margin = ttl / 4
		}
		c.token, c.expires = tok, start.Add(ttl-margin)
	}
	f.token, f.err = tok, err
	c.fetching = nil
	close(f.done)
}

// dropToken forgets tok after Daraja refused it, unless another caller has
// already replaced it.
func (c *Client) dropToken(tok string) {
	c.mu.Lock()
	if c.token == tok {
		c.token, c.expires = "", time.Time{}
	}
	c.mu.Unlock()
}

// oauth makes the OAuth call, once MaxRPS allows.
func (c *Client) oauth(parent context.Context) (string, time.Duration, error) {
	if err := c.wait(parent, opOAuth); err != nil {
		return "", 0, err
	}
	ctx, cancel := context.WithTimeout(parent, c.timeout)
	defer cancel()
	var sent atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				sent.Store(true)
			}
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+PathOAuth+"?grant_type=client_credentials", nil)
	if err != nil {
		return "", 0, &Error{Op: opOAuth, Kind: KindRefused, Code: CodeInvalidRequest, Message: "building the request", err: err}
	}
	req.Header.Set("Authorization", c.basic)
	req.Header.Set("Accept", "application/json")
	var (
		tok string
		ttl time.Duration
	)
	err = c.roundTrip(parent, opOAuth, req, &sent, func(status int, h http.Header, body []byte) error {
		var err error
		tok, ttl, err = decodeToken(status, h, body)
		return err
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Kind == KindAmbiguous {
			// Nothing is pushed by an OAuth call: whatever happened to it,
			// trying again is harmless.
			e.Kind = KindTransient
		}
		return "", 0, err
	}
	return tok, ttl, nil
}

// tokenError is the error of a push or query that could not get a token:
// the request itself was never sent, so it is at worst transient, unless
// the credentials were refused (a configuration error) or the caller gave
// up. It carries the token answer's status and code (an empty OAuth 400 is
// "http.400"), never its Uncertain: nothing was pushed.
func tokenError(ctx context.Context, op string, err error) error {
	e := &Error{Op: op, Kind: KindTransient, err: err}
	var te *Error
	if errors.As(err, &te) {
		e.HTTPStatus, e.RequestID, e.Code, e.RetryAfter = te.HTTPStatus, te.RequestID, te.Code, te.RetryAfter
		e.Message = cleanText("getting an access token: " + te.Message)
		if te.Kind == KindRefused {
			e.Kind = KindRefused
		}
	} else {
		e.Code = CodeUnreachable
		e.Message = "getting an access token"
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		e.Kind, e.Code = KindCanceled, CodeCanceled
		e.Message = "canceled by the caller while getting an access token"
	}
	return e
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
