package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
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
	o, err := o.withDefaults()
	if err != nil {
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
	h.tokens = &authenticator{
		env:      newTokenSet(o.Tokens),
		db:       newDBTokens(o.Store.LookupToken, o.Tokens, h.log, o.TokenCacheTTL, max(o.TokenStaleFor, 0)),
		failures: newSourceLimits(o.AuthFailLimit, o.AuthFailBurst),
	}
	h.tokens.db.active = o.Store.ActiveTokenDigests // loaded by Run (keepKnown)
	h.pub = &events.Publisher{JS: o.JS, Source: EventSource, Now: h.now}
	h.metrics, h.pub.Metrics = o.Metrics, o.Metrics
	h.pub.Tracer = o.Tracer
	h.stopped, h.stopWaiting = context.WithCancel(context.Background())
	h.e = h.routes(o.TrustedProxies)
	h.traceRoutes(o.Tracer)
	return h, nil
}

// withDefaults fills in o's zero settings and checks the dispatch mode and
// the idempotency lease against the publish timeout.
func (o Options) withDefaults() (Options, error) {
	switch o.DispatchMode {
	case "":
		o.DispatchMode = ModeAsync
	case ModeAsync, ModeSync:
	default:
		return o, fmt.Errorf("api: dispatch mode %q is neither async nor sync", o.DispatchMode)
	}
	if o.SyncTimeout <= 0 {
		o.SyncTimeout = DefaultSyncTimeout
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.AccessLogger == nil {
		o.AccessLogger = o.Logger
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.TokenCacheTTL == 0 {
		o.TokenCacheTTL = DefaultTokenCacheTTL
	}
	if o.TokenStaleFor == 0 {
		o.TokenStaleFor = DefaultTokenStaleFor
	}
	if o.IdempotencyTTL <= 0 {
		o.IdempotencyTTL = DefaultIdempotencyTTL
	}
	if o.IdempotencyLease <= 0 {
		o.IdempotencyLease = DefaultIdempotencyLease
	}
	if o.IdempotencyLease <= o.PublishTimeout {
		// A lease that ends while its holder still publishes would let a
		// retry publish alongside it and answer before it is settled.
		return o, fmt.Errorf("api: IdempotencyLease %s must be longer than PublishTimeout %s", o.IdempotencyLease, o.PublishTimeout)
	}
	return o, nil
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
