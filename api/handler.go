package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/webhook"
)

// EventSource is the CloudEvents source of the events the api publishes.
const EventSource = "stkgate/api"

// Routes.
const (
	PushPath   = "/api/stk-push"
	RecordPath = PushPath + "/" // + tracking id
)

// DefaultPublishTimeout bounds the wait for JetStream's ack of a request.
const DefaultPublishTimeout = 5 * time.Second

// RetryAfterSeconds is the Retry-After of a 503.
const RetryAfterSeconds = 5

// Messages of the answers clients branch on.
const (
	MsgAccepted        = "STK push request accepted for processing."
	MsgUnauthenticated = "Unauthenticated."
	MsgNotFound        = "Record not found."
	MsgUnavailable     = "The request could not be accepted right now; nothing was sent. Please retry."
	// MsgUnknownOutcome is the 503 of a request without an Idempotency-Key
	// whose publish had an unknown outcome (JetStream's ack lost): it may
	// have been accepted, so the answer names its tracking id.
	MsgUnknownOutcome  = "The request could not be confirmed right now: it may have been accepted under tracking_id. GET it before retrying (404: it was not accepted), or send an Idempotency-Key to retry safely."
	MsgReadUnavailable = "The record cannot be read right now. Please retry."
	MsgInternal        = "Internal server error."
)

// readTimeout bounds a read of the record and a readiness ping.
const readTimeout = 5 * time.Second

// Options are what NewHandler needs.
type Options struct {
	// Conn is the NATS connection JS uses: /readyz reports its state and
	// sync mode subscribes through it. Required.
	Conn *nats.Conn
	// JS publishes stk.requested. Required.
	JS jetstream.JetStream
	// Store reads the records. Required.
	Store *store.Store
	// Tokens are the API_TOKENS clients and their tokens. The clients in
	// the database (stkgate-admin) authenticate besides them.
	Tokens []ClientToken
	// TokenCacheTTL is how long the answer of a database token lookup,
	// found or not, is reused; 0 means DefaultTokenCacheTTL, below 0 no
	// cache.
	TokenCacheTTL time.Duration
	// TokenStaleFor is how long past TokenCacheTTL a token found valid
	// is still let in while it cannot be checked again in time; 0 means
	// DefaultTokenStaleFor, below 0 never.
	TokenStaleFor time.Duration
	// AuthFailLimit is the failed authentications per second a source
	// address may make, with bursts of AuthFailBurst; 0 means no limit.
	AuthFailLimit float64
	AuthFailBurst int
	// TrustedProxies are the networks of the proxies in front of the api:
	// only from them is X-Forwarded-For believed about a request's source.
	// Empty: the source is the TCP peer.
	TrustedProxies []netip.Prefix
	// DispatchMode; "" means async.
	DispatchMode DispatchMode
	// SyncTimeout is how long sync mode waits; 0 means DefaultSyncTimeout.
	SyncTimeout time.Duration
	// PublishTimeout bounds the publish of a request; 0 means
	// DefaultPublishTimeout.
	PublishTimeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// AccessLogger receives the access lines (one a request answered)
	// below 500: lines that may be held and lost in a crash
	// (service.Loggers' Access). nil means Logger. The access line of a
	// 5xx and every line of a payment go to Logger.
	AccessLogger *slog.Logger
	// Now is the clock of RequestedAt and the envelopes; nil means time.Now.
	Now func() time.Time
	// IdempotencyTTL is how long an Idempotency-Key is kept from its first
	// use; 0 means DefaultIdempotencyTTL.
	IdempotencyTTL time.Duration
	// IdempotencyLease is how long a claimed key keeps other requests with
	// it out before one may take it over; 0 means DefaultIdempotencyLease.
	IdempotencyLease time.Duration
	// RateLimit is each client's sustained requests per second on /api,
	// with bursts of RateBurst; 0 means no limit.
	RateLimit float64
	RateBurst int
	// PhoneMaxPrompts is how many requests a phone may receive per
	// PhoneWindow, across every client and api instance; 0 means no limit.
	PhoneMaxPrompts int
	PhoneWindow     time.Duration
	// ClientMaxQueued is how many requests a client may have accepted and
	// not yet dispatched, across every api instance; 0 means no limit.
	ClientMaxQueued int
	// QueuedRefresh is how often a client's queued requests are counted
	// in Postgres, at most; 0 means DefaultQueuedRefresh.
	QueuedRefresh time.Duration
	// SearchConcurrency and ClientSearchConcurrency bound the searches
	// running at once in this instance, over all clients and per client;
	// 0 means DefaultSearchConcurrency and DefaultClientSearchConcurrency.
	SearchConcurrency       int
	ClientSearchConcurrency int
	// Metrics counts the requests, publishes and refusals; nil: off.
	Metrics *metrics.Registry
	// Tracer, when set, traces each request and the publish of its
	// stk.requested (trace.go); nil is off.
	Tracer trace.Tracer
	// WebhookPolicy checks a request's callback_url as stkgate-admin
	// checks an endpoint's URL (WEBHOOK_DEV_MODE allows http and
	// loopback); WebhookLookup resolves its host (nil: the system's).
	WebhookPolicy webhook.Policy
	WebhookLookup webhook.Lookup
}

// Handler is the api's HTTP handler: /api/stk-push (POST a push, GET a
// search, GET /api/stk-push/{tracking_id} a record), /healthz, /readyz,
// and its OpenAPI document (/openapi.yaml, /docs).
type Handler struct {
	searches       *searchSlots
	e              *echo.Echo
	conn           *nats.Conn
	js             jetstream.JetStream
	pub            *events.Publisher
	store          *store.Store
	tokens         *authenticator
	mode           DispatchMode
	syncTimeout    time.Duration
	publishTimeout time.Duration
	log            *slog.Logger
	access         *slog.Logger
	now            func() time.Time
	idemTTL        time.Duration
	idemLease      time.Duration
	// clientLimits is nil without a rate limit.
	clientLimits *clientLimits
	phoneMax     int
	phoneWindow  time.Duration
	// queued is nil without a cap on queued requests.
	queued *queuedLimits
	// streamHandle is the STK stream, looked up on first use.
	streamMu     sync.Mutex
	streamHandle jetstream.Stream
	// stopped ends every sync wait: they answer 202 at once.
	stopped     context.Context
	stopWaiting context.CancelFunc
	// metrics is nil when metrics are off.
	metrics *metrics.Registry
	// traced: traceRoutes traces every request.
	traced bool
	// webhookPolicy and webhookLookup check callback_url.
	webhookPolicy webhook.Policy
	webhookLookup webhook.Lookup
	// reads are the contexts of the polls' reads.
	reads readContexts
}

// NewHandler builds the handler.
func NewHandler(o Options) (*Handler, error) {
	if o.Conn == nil || o.JS == nil || o.Store == nil {
		return nil, errors.New("api: NewHandler needs Conn, JS and Store")
	}
	if err := checkTokens(o.Tokens); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if err := checkOptionLimits(o); err != nil {
		return nil, err
	}
	h := &Handler{
		conn:           o.Conn,
		js:             o.JS,
		store:          o.Store,
		mode:           o.DispatchMode,
		syncTimeout:    o.SyncTimeout,
		publishTimeout: o.PublishTimeout,
		log:            o.Logger,
		access:         o.AccessLogger,
		now:            o.Now,
		idemTTL:        o.IdempotencyTTL,
		idemLease:      o.IdempotencyLease,
		clientLimits:   newClientLimits(o.RateLimit, o.RateBurst),
		phoneMax:       o.PhoneMaxPrompts,
		phoneWindow:    o.PhoneWindow,
		queued:         newQueuedLimits(o.ClientMaxQueued, o.QueuedRefresh, o.Store.CountQueued),
		searches:       newSearchSlots(o.SearchConcurrency, o.ClientSearchConcurrency),
		webhookPolicy:  o.WebhookPolicy,
		webhookLookup:  o.WebhookLookup,
	}
	switch h.mode {
	case "":
		h.mode = ModeAsync
	case ModeAsync, ModeSync:
	default:
		return nil, fmt.Errorf("api: dispatch mode %q is neither async nor sync", h.mode)
	}
	if h.syncTimeout <= 0 {
		h.syncTimeout = DefaultSyncTimeout
	}
	if h.publishTimeout <= 0 {
		h.publishTimeout = DefaultPublishTimeout
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.access == nil {
		h.access = h.log
	}
	if h.now == nil {
		h.now = time.Now
	}
	if o.TokenCacheTTL == 0 {
		o.TokenCacheTTL = DefaultTokenCacheTTL
	}
	if o.TokenStaleFor == 0 {
		o.TokenStaleFor = DefaultTokenStaleFor
	}
	h.tokens = &authenticator{
		env:      newTokenSet(o.Tokens),
		db:       newDBTokens(o.Store.LookupToken, o.Tokens, h.log, o.TokenCacheTTL, max(o.TokenStaleFor, 0)),
		failures: newSourceLimits(o.AuthFailLimit, o.AuthFailBurst),
	}
	h.tokens.db.active = o.Store.ActiveTokenDigests // loaded by Run (keepKnown)
	if h.idemTTL <= 0 {
		h.idemTTL = DefaultIdempotencyTTL
	}
	if h.idemLease <= 0 {
		h.idemLease = DefaultIdempotencyLease
	}
	if h.idemLease <= h.publishTimeout {
		// A lease that ends while its holder still publishes would let a
		// retry publish alongside it and answer before it is settled.
		return nil, fmt.Errorf("api: IdempotencyLease %s must be longer than PublishTimeout %s", h.idemLease, h.publishTimeout)
	}
	h.pub = &events.Publisher{JS: o.JS, Source: EventSource, Now: h.now}
	h.metrics, h.pub.Metrics = o.Metrics, o.Metrics
	h.pub.Tracer = o.Tracer
	h.stopped, h.stopWaiting = context.WithCancel(context.Background())
	h.e = h.routes(o.TrustedProxies)
	h.traceRoutes(o.Tracer)
	return h, nil
}

// checkOptionLimits checks the settings of o's rate and prompt limits.
func checkOptionLimits(o Options) error {
	if o.AuthFailLimit > 0 && o.AuthFailBurst < 1 {
		return fmt.Errorf("api: AuthFailBurst %d must be at least 1 with an AuthFailLimit", o.AuthFailBurst)
	}
	if o.RateLimit > 0 && o.RateBurst < 1 {
		return fmt.Errorf("api: RateBurst %d must be at least 1 with a RateLimit", o.RateBurst)
	}
	if o.PhoneMaxPrompts > 0 && o.PhoneWindow <= 0 {
		return fmt.Errorf("api: PhoneWindow %s must be positive with PhoneMaxPrompts", o.PhoneWindow)
	}
	return nil
}

// routes is the handler's echo router; trusted are the proxies whose
// forwarded address is believed (ipExtractor).
func (h *Handler) routes(trusted []netip.Prefix) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = h.handleError
	e.IPExtractor = ipExtractor(trusted)
	if h.metrics != nil {
		e.Use(h.metrics.Echo())
	}
	e.Use(h.logRequests)
	e.GET("/healthz", h.healthz)
	e.GET("/readyz", h.readyz)
	specRoutes(e)
	// Authentication per route rather than on an /api group: a group's
	// middleware needs a catch-all route, which would turn every 405 into
	// a 404. Composed here, once: echo composes a route's middleware
	// anew on every request, a closure each.
	e.POST(PushPath, h.authenticated(h.create))
	e.GET(PushPath, h.authenticated(h.searchRecords))
	e.GET(RecordPath+":tracking_id", h.authenticated(h.get))
	e.GET(WebhookDeliveriesPath, h.authenticated(h.webhookDeliveries))
	return e
}

// authenticated is next behind authenticate, then limitClient.
func (h *Handler) authenticated(next echo.HandlerFunc) echo.HandlerFunc {
	return h.authenticate(h.limitClient(next))
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.e.ServeHTTP(w, r) }

// StopWaiting ends the sync waits in flight and those to come: they answer
// 202 at once, as past SYNC_TIMEOUT. Run calls it when shutting down, so
// that draining does not wait on Daraja.
func (h *Handler) StopWaiting() { h.stopWaiting() }

// reqContext is a request's echo.Context with what the middleware and
// handlers share about it: its client (authenticate) and its payment's
// tracking id. logRequests makes it and hands it down the chain; echo's
// own store (c.Set) made a map and boxed each value, every request.
type reqContext struct {
	echo.Context
	client, trackingID string
}

// Keys of the same values on a context that is not a reqContext: one
// made outside logRequests (a test), and echo's own, before logRequests
// and after it, where the tracing middleware reads the tracking id
// (logRequests copies it there when tracing is on).
const (
	ctxClient     = "stkgate.client"
	ctxTrackingID = "stkgate.tracking_id"
)

func clientOf(c echo.Context) string {
	if rc, ok := c.(*reqContext); ok {
		return rc.client
	}
	s, _ := c.Get(ctxClient).(string)
	return s
}

func trackingIDOf(c echo.Context) string {
	if rc, ok := c.(*reqContext); ok {
		return rc.trackingID
	}
	s, _ := c.Get(ctxTrackingID).(string)
	return s
}

func setClient(c echo.Context, client string) {
	if rc, ok := c.(*reqContext); ok {
		rc.client = client
		return
	}
	c.Set(ctxClient, client)
}

func setTrackingID(c echo.Context, id string) {
	if rc, ok := c.(*reqContext); ok {
		rc.trackingID = id
		return
	}
	c.Set(ctxTrackingID, id)
}

// readContexts hands out the contexts of the polls' reads: one shared by
// the reads begun within readContextSlack of each other, whose deadline is
// readTimeout to readTimeout+readContextSlack after each of them began. A
// context of a read's own (context.WithTimeout) was some 1 µs and six
// allocations of a poll. The shared one carries no value of the request
// (nothing under the read looks for one) and is never cancelled but by its
// deadline; each lives until then, some 50 at a time.
type readContexts struct {
	cur atomic.Pointer[readContext]
}

// readContextSlack is how much longer than readTimeout a poll's read may
// be given.
const readContextSlack = 100 * time.Millisecond

type readContext struct {
	ctx      context.Context
	cancel   context.CancelFunc // called by no one: the deadline cancels ctx
	deadline time.Time
}

// get is the context of a read begun at now.
func (r *readContexts) get(now time.Time) context.Context {
	if c := r.cur.Load(); c != nil && c.deadline.Sub(now) >= readTimeout {
		return c.ctx
	}
	c := &readContext{deadline: now.Add(readTimeout + readContextSlack)}
	c.ctx, c.cancel = context.WithDeadline(context.Background(), c.deadline)
	r.cur.Store(c) // a read racing this one may store its own: either serves
	return c.ctx
}

// Errors the handlers return; handleError turns them into answers.
var (
	errUnauthenticated = errors.New("unauthenticated")
	errNotFound        = errors.New("not found")
)

// unavailableError is a dependency that failed (JetStream, Postgres): 503
// with Retry-After, the cause logged, not shown.
type unavailableError struct {
	message string
	cause   error
	// trackingID is shown when the request may have been accepted.
	trackingID string
}

func (e *unavailableError) Error() string { return e.cause.Error() }
func (e *unavailableError) Unwrap() error { return e.cause }

// failure is the body of every error answer.
type failure struct {
	Success bool        `json:"success"`
	Message string      `json:"message"`
	Errors  FieldErrors `json:"errors,omitempty"`
	// TrackingID: a 503 for a request that may have been accepted.
	TrackingID string `json:"tracking_id,omitempty"`
}

// handleError is the one place where errors become HTTP answers. Only
// messages meant for clients leave; causes are logged.
func (h *Handler) handleError(err error, c echo.Context) {
	status, body := http.StatusInternalServerError, failure{Message: MsgInternal}
	var (
		reqErr   *RequestError
		unavail  *unavailableError
		limited  *limitedError
		echoErr  *echo.HTTPError
		logLevel = slog.LevelError
	)
	switch {
	case errors.Is(err, errUnauthenticated):
		status, body.Message = http.StatusUnauthorized, MsgUnauthenticated
	case errors.Is(err, errNotFound):
		status, body.Message = http.StatusNotFound, MsgNotFound
	case errors.Is(err, errKeyBusy):
		status, body.Message = http.StatusConflict, MsgKeyBusy
		retryAfter(c.Response().Header(), busyRetryAfterSeconds)
	case errors.As(err, &reqErr):
		status, body.Message, body.Errors = reqErr.Status, reqErr.Message, reqErr.Fields
	case errors.As(err, &limited):
		h.metrics.Refused(limitOf(limited))
		status, body.Message = http.StatusTooManyRequests, limited.message
		retryAfter(c.Response().Header(), limited.retryAfter)
	case errors.As(err, &unavail):
		status, body.Message, body.TrackingID = http.StatusServiceUnavailable, unavail.message, unavail.trackingID
		retryAfter(c.Response().Header(), RetryAfterSeconds)
		logLevel = slog.LevelWarn
	case errors.As(err, &echoErr) && echoErr.Code < 500:
		status = echoErr.Code
		switch status {
		case http.StatusNotFound:
			body.Message = "Not found."
		case http.StatusMethodNotAllowed:
			body.Message = "Method not allowed."
		default:
			body.Message = http.StatusText(status) + "."
		}
	}
	if status >= 500 {
		h.log.Log(c.Request().Context(), logLevel, "request failed",
			"tracking_id", trackingIDOf(c), "client", clientOf(c),
			"method", c.Request().Method, "path", shortPath(c), "status", status, "error", err)
	}
	if c.Response().Committed {
		return
	}
	if err := c.JSON(status, body); err != nil {
		h.log.Debug("write error answer", "error", err)
	}
}

// logRequests logs every request once it is answered (never its token or
// body), answers the errors of the handlers, and turns a panic into a 500.
func (h *Handler) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) (err error) {
		start := time.Now()
		c := &reqContext{Context: ec}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				err = fmt.Errorf("panic: %v", p)
				h.log.Error("panic in handler", "tracking_id", c.trackingID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
			if err != nil {
				// ec.Error would answer with ec, which knows neither
				// the client nor the tracking id.
				h.handleError(err, c)
				err = nil
			}
			h.logAccess(c, start)
			if h.traced && c.trackingID != "" {
				ec.Set(ctxTrackingID, c.trackingID) // for the server span (traceRoutes)
			}
		}()
		return next(c)
	}
}

// logAccess logs the access line of c, a request begun at start: on the
// access logger (held, written in batches) below 500, on the logger
// (written at once) from 500. The record goes to the handler itself:
// Logger.LogAttrs would look up its caller's pc, which no handler here
// shows (no AddSource), for a tenth of the line's cost.
func (h *Handler) logAccess(c echo.Context, start time.Time) {
	status := c.Response().Status
	level, log := slog.LevelInfo, h.access
	if status >= 500 {
		level, log = slog.LevelWarn, h.log
	}
	ctx := c.Request().Context()
	handler := log.Handler()
	if !handler.Enabled(ctx, level) {
		return
	}
	// Room for every attr below: appending to a slice of six grew it on
	// every authenticated request.
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs,
		slog.String("method", c.Request().Method),
		slog.String("path", shortPath(c)),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.Int64("bytes", c.Response().Size),
		slog.String("remote", c.Request().RemoteAddr),
	)
	if cl := clientOf(c); cl != "" {
		attrs = append(attrs, slog.String("client", cl))
	}
	if id := trackingIDOf(c); id != "" {
		attrs = append(attrs, slog.String("tracking_id", id))
	}
	r := slog.NewRecord(time.Now(), level, "request", 0)
	r.AddAttrs(attrs...)
	_ = handler.Handle(ctx, r)
}

// shortPath is the request's path, cut short: it is the client's text.
func shortPath(c echo.Context) string {
	p := c.Request().URL.Path
	if len(p) > 200 {
		p = p[:200] + "…"
	}
	return p
}

// ipExtractor finds a request's source address: the TCP peer, or, when the
// peer is one of trusted, the right-most address of X-Forwarded-For that is
// not (each proxy appends the address it got the request from; what is
// left of it is whatever the client wrote). echo's default would believe
// X-Forwarded-For from anyone, and its extractor trusts loopback, private
// and link-local peers unless told not to.
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{
			IP:   net.IP(p.Addr().AsSlice()),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// authenticate lets through a request whose X-API-Token belongs to a
// client (of API_TOKENS or of the database), and records which client: it
// scopes everything after. A token the database could not check is a 503;
// a source address that failed too often is a 429.
func (h *Handler) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		source, _ := netip.ParseAddr(c.RealIP()) // unreadable: the zero address, shared
		client, err := h.tokens.client(c.Request().Context(), c.Request().Header.Get(TokenHeader), source)
		var limited *limitedError
		if errors.As(err, &limited) {
			h.log.Warn("request refused: too many failed authentications from its address", "source", source.String(),
				"retry_after_s", limited.retryAfter)
			return err
		}
		if err != nil {
			return &unavailableError{message: MsgAuthUnavailable, cause: err}
		}
		if client == "" {
			return errUnauthenticated
		}
		setClient(c, client)
		return next(c)
	}
}

func (h *Handler) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz says whether requests can be served now: a push needs NATS, a
// poll needs Postgres.
func (h *Handler) readyz(c echo.Context) error {
	natsState, pgState := "ok", "ok"
	if !h.conn.IsConnected() {
		natsState = h.conn.Status().String()
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), readTimeout)
	defer cancel()
	if err := h.store.Ping(ctx); err != nil {
		pgState = "unreachable"
		h.log.Warn("readiness: Postgres does not answer", "error", err)
	}
	body := map[string]string{"status": "ready", "nats": natsState, "postgres": pgState}
	if natsState != "ok" || pgState != "ok" {
		body["status"] = "not ready"
		return c.JSON(http.StatusServiceUnavailable, body)
	}
	return c.JSON(http.StatusOK, body)
}

// readBody reads at most MaxBodyBytes of the request body.
func readBody(c echo.Context) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > MaxBodyBytes {
		return nil, errTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, errTooLarge
		}
		return nil, badRequest("The request body could not be read.")
	}
	return body, nil
}

type acceptedBody struct {
	Success    bool   `json:"success"`
	TrackingID string `json:"tracking_id"`
	Message    string `json:"message"`
}

type recordBody struct {
	Success bool       `json:"success"`
	Data    RecordView `json:"data"`
}

// create is POST /api/stk-push: validate, publish stk.requested and wait
// for JetStream's ack, then answer 202 (or, in sync mode, the record once
// Daraja answered). With an Idempotency-Key, the key is claimed first and a
// request that repeats an accepted one is answered from it (see
// idempotency.go).
func (h *Handler) create(c echo.Context) error {
	start := time.Now()
	client := clientOf(c)
	key, err := idempotencyKeyOf(c.Request().Header)
	if err != nil {
		return err
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	req, err := DecodeRequest(c.Request().Header.Get(echo.HeaderContentType), body)
	if err != nil {
		return err
	}
	uid, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("new tracking id: %w", err)
	}
	id := uid.String()
	if key == "" {
		if err := h.checkCallbackURL(c.Request().Context(), client, &req); err != nil {
			return err
		}
		setTrackingID(c, id)
		return h.accept(c, client, id, req, start, nil)
	}
	// Under a key, only the callback_url's form is checked before the
	// claim (its normal form is part of the key's request): the opt-in
	// and the host's addresses may have changed since the key's request
	// was accepted, and a retry of it is answered as accepted whatever
	// they say now. A 422 would tell a client whose answer was lost that
	// nothing was, and it would ask again under a new key.
	if err := h.normaliseCallbackURL(&req); err != nil {
		return err
	}

	id, held, takenOver, err := h.claimKey(c.Request().Context(), client, key, req, id)
	if id != "" {
		setTrackingID(c, id)
	}
	if err != nil {
		return err
	}
	if held == nil {
		return h.replay(c, client, id)
	}
	if takenOver {
		// The api that held the key died or did not learn whether its
		// publish was stored. Beyond JetStream's duplicate window a second
		// publish would be stored again, so look first.
		stored, err := h.requestedStored(c.Request().Context(), id)
		if err != nil {
			h.settleKey(c, client, id, held, err)
			return &unavailableError{message: MsgUnconfirmed, cause: err}
		}
		h.log.Info("idempotency key taken over", "tracking_id", id, "client", client, "already_stored", stored)
		if stored {
			h.settleKey(c, client, id, held, nil)
			return h.replay(c, client, id)
		}
	}
	checked := req
	if err := h.checkCallbackURL(c.Request().Context(), client, &checked); err != nil {
		h.settleKey(c, client, id, held, fmt.Errorf("%w: %w", errNotSent, err))
		return err
	}
	return h.accept(c, client, id, req, start, held)
}

// requestedStored reports whether stk.requested of id is in the stream.
func (h *Handler) requestedStored(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
	defer cancel()
	s, err := h.stkStream(ctx)
	if err != nil {
		return false, err
	}
	// Confirmed with the leader: a lagging replica's "not found" would
	// publish the request again beyond the duplicate window.
	_, err = events.LastMsg(ctx, h.js, s, events.Subject(events.TypeRequested, id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, fmt.Errorf("look up stk.requested: %w", err)
}

// replay answers a request whose Idempotency-Key stands for an accepted
// request: 202 with its tracking id, or in sync mode its record as 200 once
// Daraja has answered it (as the first request would have been answered),
// without waiting again.
func (h *Handler) replay(c echo.Context, client, id string) error {
	c.Response().Header().Set(ReplayedHeader, "true")
	if h.mode == ModeSync {
		ctx, cancel := context.WithTimeout(c.Request().Context(), readTimeout)
		defer cancel()
		rec, err := h.currentRecord(ctx, client, id)
		switch {
		case err == nil && rec.Stage >= store.StageDispatched:
			return c.JSON(http.StatusOK, recordBody{Success: true, Data: ViewOf(rec)})
		case err != nil && !errors.Is(err, store.ErrNotFound):
			h.log.Warn("sync mode: cannot read the record of a replayed request; answering as async",
				"tracking_id", id, "error", err)
		}
	}
	h.log.Info("stk push replayed for its idempotency key", "tracking_id", id, "client", client)
	c.Response().Header().Set(echo.HeaderLocation, RecordPath+id)
	return c.JSON(http.StatusAccepted, acceptedBody{Success: true, TrackingID: id, Message: MsgAccepted})
}

// accept publishes stk.requested of id and answers. held is the request's
// idempotency key claim, nil without a key: it is completed, released or
// left for a retry according to the publish's outcome.
//
// Its steps: listenSync, takeLimits, publishRequested, then the answer
// (answerAccepted).
//
// The payment's logger (h.log with its tracking_id and client) is made only
// for a line on a failure path (paymentLog): made for every request, it
// formatted both attributes for a handler clone that the accepted line,
// which names them itself, did not need.
func (h *Handler) accept(c echo.Context, client, id string, req Request, start time.Time, held *heldKey) error {
	wait := h.listenSync(client, id)
	if wait != nil {
		defer wait.close()
	}
	queued, err := h.takeLimits(c, client, id, req, held)
	if err != nil {
		return err
	}
	ack, err := h.publishRequested(c, client, id, req, held, queued)
	if err != nil {
		return err
	}
	// Typed attrs, the line's bytes as Info's: Info boxed each value.
	h.log.LogAttrs(context.Background(), slog.LevelInfo, "stk push accepted",
		slog.String("tracking_id", id), slog.String("client", client), slog.String("phone", events.MaskPhone(req.Phone)),
		slog.Int64("amount", req.Amount), slog.Int("reference_len", len(req.Reference)),
		slog.Uint64("stream_seq", ack.Sequence), slog.Bool("duplicate", ack.Duplicate),
		slog.String("mode", string(h.mode)), slog.Bool("idempotency_key", held != nil))
	return h.answerAccepted(c, wait, client, id, start)
}

// listenSync, in sync mode, subscribes to id's answers; nil in async mode
// or when it cannot. The caller closes it.
func (h *Handler) listenSync(client, id string) *syncWait {
	// In sync mode, listen before publishing, so that no answer can come
	// before the subscription.
	if h.mode != ModeSync {
		return nil
	}
	wait, err := h.listen(id)
	if err != nil {
		// The publish below fails too if NATS is gone; if not, the
		// client gets the async answer and polls.
		h.paymentLog(client, id).Warn("sync mode: cannot subscribe; answering as async", "error", err)
		return nil
	}
	return wait
}

// takeLimits takes the client's place in its cap of queued requests and the
// phone's prompt slot; queued gives the first back (takeQueued). On an error
// neither is held, and held's key is settled with it.
func (h *Handler) takeLimits(c echo.Context, client, id string, req Request, held *heldKey) (queued func(bool), err error) {
	// The client's place in its cap of queued requests and the phone's
	// slot are taken before the publish, so that no more than the limits
	// can be published, and given back if nothing was.
	queued, err = h.takeQueued(c.Request().Context(), client, id)
	if err == nil {
		if err = h.reservePrompt(c.Request().Context(), client, id, req.Phone); err != nil {
			queued(false)
		}
	}
	if err != nil {
		if held != nil {
			h.settleKey(c, client, id, held, err)
		}
		return nil, limitedAfterTakeOver(held, err)
	}
	return queued, nil
}

// limitedAfterTakeOver is the answer to a request refused by a limit, or
// unable to take it: for a key taken over from an api that died or was cut
// off mid-request, "not confirmed: retry with the same key" (the earlier
// api's publish may still be stored: a proposal in flight, a reconnect
// buffer), never a 429 or 503 saying nothing was sent, which could make
// the client ask again under a new key and prompt the customer twice.
func limitedAfterTakeOver(held *heldKey, err error) error {
	var limited *limitedError
	var unavailable *unavailableError
	if held == nil || !held.takenOver || !(errors.As(err, &limited) || errors.As(err, &unavailable)) {
		return err
	}
	// The refusal is kept as text, not wrapped: wrapped, the answer would
	// still be the limit's 429 (errorHandler looks for it first).
	return &unavailableError{message: MsgUnconfirmed, cause: fmt.Errorf("after a take-over: %v", err)}
}

// publishRequested publishes stk.requested of id, then settles what the
// publish's outcome decides: the queued place, held's key, the phone's
// slot. Its error is the client's answer (publishFailed).
func (h *Handler) publishRequested(c echo.Context, client, id string, req Request, held *heldKey, queued func(bool)) (*jetstream.PubAck, error) {
	ev := events.Requested{Payment: events.Payment{
		TrackingID:  id,
		Client:      client,
		Phone:       req.Phone,
		Amount:      req.Amount,
		Reference:   req.Reference,
		Tag:         req.Tag,
		RequestedAt: h.now().UTC(),
	}, CallbackURL: req.CallbackURL}
	// A client that hangs up does not stop the publish: once JetStream may
	// have the request, whether it is stored must be decided, not dropped.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), h.publishTimeout)
	ack, err := h.publish(pctx, ev)
	cancel()
	// Nothing was published under this id only if this publish certainly
	// stored nothing and, for a key taken over, no earlier holder's attempt
	// may have been stored either (its proposal may still be in flight, or
	// in a cut-off api's reconnect buffer).
	nothingSent := err != nil && publishNotStored(err) && (held == nil || !held.takenOver)
	queued(!nothingSent)
	if held != nil {
		h.settleKey(c, client, id, held, err)
	}
	if nothingSent {
		h.releasePrompt(c.Request().Context(), id)
	}
	if err != nil {
		return nil, publishFailed(h.paymentLog(client, id), id, req, held, err, nothingSent)
	}
	return ack, nil
}

// paymentLog is h.log with the tracking id and client of a payment, for
// its lines on the paths that fail.
func (h *Handler) paymentLog(client, id string) *slog.Logger {
	return h.log.With("tracking_id", id, "client", client)
}

// publishFailed is the answer to a failed publish of stk.requested;
// nothingSent: no attempt under this id can have been stored.
func publishFailed(log *slog.Logger, id string, req Request, held *heldKey, err error, nothingSent bool) error {
	msg, shownID := MsgUnavailable, ""
	if !nothingSent {
		// The request may have reached JetStream with its ack lost;
		// the Nats-Msg-Id keeps it from being stored twice, but it may
		// be stored once although the client is told 503. With an
		// Idempotency-Key the claim keeps the tracking id, and a retry
		// publishes the same one again.
		log.Error("publish stk.requested has an unknown outcome; it may still have been stored",
			"phone", events.MaskPhone(req.Phone), "amount", req.Amount, "idempotency_key", held != nil, "error", err)
		msg, shownID = MsgUnknownOutcome, id
		if held != nil {
			msg, shownID = MsgUnconfirmed, ""
		}
	}
	return &unavailableError{message: msg, cause: fmt.Errorf("publish stk.requested: %w", err), trackingID: shownID}
}

// answerAccepted answers an accepted request: in sync mode (wait) its
// record once Daraja answered it in time, else 202.
func (h *Handler) answerAccepted(c echo.Context, wait *syncWait, client, id string, start time.Time) error {
	if wait != nil {
		rec, ok := h.await(c.Request().Context(), wait, client, id, start.Add(h.syncTimeout))
		if ok {
			return c.JSON(http.StatusOK, recordBody{Success: true, Data: ViewOf(rec)})
		}
	}
	c.Response().Header().Set(echo.HeaderLocation, RecordPath+id)
	return c.JSON(http.StatusAccepted, acceptedBody{Success: true, TrackingID: id, Message: MsgAccepted})
}

// publish publishes ev and waits for its ack. An attempt that times out is
// repeated with the same Nats-Msg-Id while ctx allows: if the first one was
// stored after all, JetStream acks the second as a duplicate, and the client
// is told the truth, 202, instead of a 503 that would make it pay twice.
//
// A repeat's failure speaks for the repeat alone: once an attempt timed
// out, that attempt may be stored, so a repeat refused outright (no
// responders, a JetStream error) is returned as errMaybeStored, never as
// "not stored" (publishNotStored), which would release the key and tell the
// client to retry into a second payment.
func (h *Handler) publish(ctx context.Context, ev events.Event) (*jetstream.PubAck, error) {
	var lost error // the first attempt that timed out, if any
	for {
		actx, cancel := context.WithTimeout(ctx, h.publishTimeout/2)
		ack, err := h.pub.Publish(actx, ev)
		cancel()
		switch {
		case err == nil:
			return ack, nil
		case lost != nil && publishNotStored(err):
			return nil, &maybeStoredError{lost: lost, last: err}
		case ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded):
			return nil, err
		}
		if lost == nil {
			lost = err
		}
	}
}

// maybeStoredError is a publish whose repeat was refused after an earlier
// attempt's ack was lost: the earlier one may be stored.
type maybeStoredError struct{ lost, last error }

func (e *maybeStoredError) Error() string {
	return fmt.Sprintf("repeat refused (%v) after an attempt with an unknown outcome (%v)", e.last, e.lost)
}

// Unwrap gives the earlier attempt's error only: errors.Is and errors.As
// must not find the repeat's refusal and take it for the whole publish's.
func (e *maybeStoredError) Unwrap() error { return e.lost }

// get is GET /api/stk-push/:tracking_id: the client's own record, from the
// read model or, while it is not projected yet, from the stream.
func (h *Handler) get(c echo.Context) error {
	id := c.Param("tracking_id")
	if _, err := uuid.Parse(id); err == nil {
		setTrackingID(c, id)
	}
	// The read finishes even when the client hangs up: cancelling it
	// costs Postgres a connection of its own (lib/pq's cancel request) and
	// the pool the connection lib/pq then marks bad, so a burst of hung-up
	// polls would leave the next ones waiting for new connections; the
	// read itself is one indexed row. Its timeout is a context shared
	// with the polls begun about the same time (readContexts).
	rec, err := h.currentRecord(h.reads.get(time.Now()), clientOf(c), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errNotFound
	case err != nil:
		return err
	}
	return recordOfJSON(c, http.StatusOK, &rec)
}
