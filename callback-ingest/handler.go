package callback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/failpoint"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/redact"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

// RoutePrefix is the path of the CallBackURL without the tracking id: the
// dispatcher gives Daraja CALLBACK_BASE_URL + RoutePrefix +
// <tracking_id>/<token> (events.CallbackURL).
const RoutePrefix = events.CallbackPath

// MaxBodyBytes bounds a callback body; a real one is under 1 KiB.
const MaxBodyBytes = 64 << 10

// MaxHeaderBytes bounds a callback's headers (Go's default is 1 MiB):
// Safaricom's are a few hundred bytes, and a proxy adds little; more is
// refused with 431 before the handler runs, so nothing is kept of it.
const MaxHeaderBytes = 16 << 10

// EventSource is the CloudEvents source of the events this service publishes.
const EventSource = "stkgate/callback-ingest"

// DefaultTimeout bounds the NATS work of one callback.
const DefaultTimeout = 5 * time.Second

// Options are what NewHandler needs.
type Options struct {
	JS jetstream.JetStream
	// Stream is the STK stream, as events.EnsureStream returned it.
	Stream jetstream.Stream
	// Conn is the connection JS uses; /readyz reports its state.
	Conn *nats.Conn
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock of CompletedAt and of the envelope; nil means time.Now.
	Now func() time.Time
	// Timeout bounds the NATS work of one callback; 0 means DefaultTimeout.
	Timeout time.Duration
	// Secrets verify the callback token; required.
	Secrets events.CallbackSecrets
	// Sources limits who may send callbacks; the zero value allows all.
	Sources SourcePolicy
	// Confirm is ConfirmMismatch (also when ""), ConfirmAlways or
	// ConfirmNever.
	Confirm string
	// FastFailure: a failure callback that comes within this time of its
	// push is held for Daraja's STK query (fastFailure); 0 holds none.
	// Config's default is DefaultFastFailure.
	FastFailure time.Duration
	// Receipts is the events.ReceiptsBucket; nil opens it on first use.
	Receipts jetstream.KeyValue
	// Metrics counts the requests, the publishes and the applier's
	// messages; nil: off.
	Metrics *metrics.Registry
	// Tracer, when set, traces each applied callback as part of its
	// payment's trace (traceCallback); nil is off.
	Tracer trace.Tracer
}

// Answer is the JSON body of every answer to a callback. Daraja expects
// {"ResultCode": 0, "ResultDesc": "Accepted"}.
type Answer struct {
	ResultCode int    `json:"ResultCode"`
	ResultDesc string `json:"ResultDesc"`
}

var (
	accepted    = Answer{0, "Accepted"}
	unknownID   = Answer{1, "Rejected: unknown tracking id"}
	tooLarge    = Answer{1, "Rejected: body too large"}
	unavailable = Answer{1, "Unavailable: try again later"}
	internal    = Answer{1, "Internal error"}
	forbidden   = Answer{1, "Rejected: source not allowed"}
)

func rejected(reason string) Answer { return Answer{1, "Rejected: " + reason} }

// NewHandler returns the service's HTTP handler: the callback route
// (RoutePrefix + ":tracking_id", any method), /healthz and /readyz.
func NewHandler(o Options) (http.Handler, error) {
	h, err := newHandler(o)
	if err != nil {
		return nil, err
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	if o.Metrics != nil {
		e.Use(o.Metrics.Echo())
	}
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			h.log.Error("panic in handler", "tracking_id", pathForLog(c.Request().URL.Path), "error", err, "stack", string(stack))
			return err
		},
	}))
	// Every request under the callback path is kept, whatever its path:
	// a misconfigured CallBackURL is still a callback worth having. The
	// path is read by events.ParseCallbackPath.
	e.Any(RoutePrefix+"*", h.callback)
	e.Any(strings.TrimSuffix(RoutePrefix, "/"), h.callback)
	e.GET("/healthz", h.healthz)
	e.GET("/readyz", h.readyz)
	return e, nil
}

// newHandler checks o and fills in its defaults.
func newHandler(o Options) (*handler, error) {
	if o.JS == nil || o.Stream == nil || o.Conn == nil {
		return nil, errors.New("callback: NewHandler needs JS, Stream and Conn")
	}
	if o.Secrets.Len() == 0 {
		return nil, errors.New("callback: NewHandler needs Secrets (CALLBACK_SECRET)")
	}
	h := &handler{
		js:      o.JS,
		stream:  o.Stream,
		conn:    o.Conn,
		log:     o.Logger,
		now:     o.Now,
		timeout: o.Timeout,
		secrets: o.Secrets,
		sources: o.Sources,
		confirm: o.Confirm,
		refused: newSourceLimits(RefusedRate, RefusedBurst, maxRefusedSources).withTotal(RefusedTotalRate, RefusedTotalBurst),
		fast:    max(o.FastFailure, 0),

		receipts: o.Receipts,
	}
	switch h.confirm {
	case "":
		h.confirm = ConfirmMismatch
	case ConfirmMismatch, ConfirmAlways, ConfirmNever:
	default:
		return nil, fmt.Errorf("callback: Confirm %q is not mismatch, always or never", o.Confirm)
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.timeout <= 0 {
		h.timeout = DefaultTimeout
	}
	h.pub = &events.Publisher{JS: o.JS, Source: EventSource, Now: h.now}
	h.metrics, h.pub.Metrics = o.Metrics, o.Metrics
	h.pub.Tracer = o.Tracer
	return h, nil
}

type handler struct {
	metrics *metrics.Registry // nil: off
	js      jetstream.JetStream
	stream  jetstream.Stream
	conn    *nats.Conn
	pub     *events.Publisher
	log     *slog.Logger
	now     func() time.Time
	timeout time.Duration
	secrets events.CallbackSecrets
	sources SourcePolicy
	confirm string
	// refused limits the storage of callbacks refused before their token
	// was verified, per source (keepRefused).
	refused *sourceLimits
	fast    time.Duration

	mu sync.Mutex
	// receipts claims each receipt for one payment (claimReceipt).
	receipts jetstream.KeyValue
	// attempts is the dispatcher's record of each push, once found to
	// exist (attemptRecords).
	attempts jetstream.KeyValue
}

func (h *handler) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz says whether a callback could be taken now: without NATS it could
// only be answered 503.
func (h *handler) readyz(c echo.Context) error {
	if !h.conn.IsConnected() {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{
			"status": "not ready",
			"reason": "nats " + h.conn.Status().String(),
		})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// callback takes one callback, in named steps: it reads it (arrive),
// refuses what may not be applied (refuseSource, refuseUnreadable,
// refuseBadPath, refuseUnauthentic, refuseMalformed), and keeps, matches and
// applies the rest (keepAndApply). Every refused callback is kept before it
// is answered.
func (h *handler) callback(c echo.Context) error {
	a, done, err := h.arrive(c)
	if done {
		return err
	}
	source, allowed := h.sources.Allowed(a.r)
	if !allowed || a.readErr != nil || !a.idOK || a.unauthentic != "" {
		a.log = h.refusedLog(a)
	}
	switch {
	case !allowed:
		return h.refuseSource(c, a, source)
	case a.readErr != nil:
		return h.refuseUnreadable(c, a)
	case !a.idOK:
		return h.refuseBadPath(c, a)
	case a.unauthentic != "":
		return h.refuseUnauthentic(c, a, source)
	}
	cb, err := ParseCallback(a.in.body)
	if err != nil {
		a.log = h.refusedLog(a)
		return h.refuseMalformed(c, a, err)
	}
	// One logger for the callback's every line, built in one go (each
	// slog.Logger.With formats its attributes anew).
	log := h.log.With(
		"tracking_id", a.logID, "callback_id", a.in.id,
		"checkout_request_id", cb.CheckoutRequestID,
		"merchant_request_id", cb.MerchantRequestID,
		"result_code", cb.ResultCode,
	)
	return h.keepAndApply(c, log, a, cb)
}

// refusedLog is the logger of a refused callback.
func (h *handler) refusedLog(a arrival) *slog.Logger {
	return h.log.With("tracking_id", a.logID, "callback_id", a.in.id)
}

// arrival is what callback knows of a callback before deciding on it.
type arrival struct {
	r *http.Request
	// log is the logger of a callback refused (its tracking id and
	// callback id); one to be matched has a logger of its own, with what
	// it says (callback).
	log   *slog.Logger
	logID string
	in    *delivery
	// id is the canonical tracking id; idOK says the path was well formed.
	id   string
	idOK bool
	// unauthentic is why the callback is not the tracking id's
	// (tokenProblem, or events.UnmatchedBadPath), or "".
	unauthentic string
	// readErr: the body could not be read whole (not for being too large).
	readErr error
}

// arrive parses the path and reads the body of a callback. done means it
// was answered already (a body too large), with err c.JSON's.
func (h *handler) arrive(c echo.Context) (a arrival, done bool, err error) {
	r := c.Request()
	raw, token, pathOK := events.ParseCallbackPath(r.URL.Path)
	id, idOK := canonicalUUID(raw)
	idOK = idOK && pathOK
	logID := id
	if !idOK {
		logID = pathForLog(r.URL.Path)
	}
	in := h.received(r, id)

	body, readErr := readBody(c.Response(), r)
	var tooBig *http.MaxBytesError
	if errors.As(readErr, &tooBig) {
		h.log.Warn("callback rejected: body too large", "tracking_id", logID, "callback_id", in.id, "limit", MaxBodyBytes)
		return a, true, c.JSON(http.StatusRequestEntityTooLarge, tooLarge)
	}
	in.body = body
	if readErr != nil {
		// The sender hung up or stalled: what did arrive is still all
		// there will ever be of this callback.
		in.detail = "body unreadable"
	}

	// Whether the callback is the tracking id's decides where a refused
	// one is kept: with its token right, whole, on a subject only that
	// token reaches; without, cut and at a bounded rate per source, on a
	// subject shared with every forgery (keepRefused).
	unauthentic := events.UnmatchedBadPath
	if idOK {
		unauthentic = h.tokenProblem(id, token)
	}
	return arrival{r: r, logID: logID, in: in, id: id, idOK: idOK, unauthentic: unauthentic, readErr: readErr}, false, nil
}

// keepAndApply matches an authentic, parsed callback against the stream,
// keeps it where the match says, and then publishes what it says (apply).
func (h *handler) keepAndApply(c echo.Context, log *slog.Logger, a arrival, cb Callback) error {
	r, in, id := a.r, a.in, a.id
	// Reading what the stream knows of the payment changes nothing; it only
	// decides where the callback is kept. Nothing is published or answered
	// before the raw copy is stored (or could not be: then 503).
	ctx, cancel := h.opContext(r)
	m := h.match(ctx, log, id, cb, in.at)
	cancel()
	kept := false
	switch {
	case m.confirm != "":
		setReceiptHolder(in.headers, m)
		kept = h.keepOn(r, log, in, events.CallbackSubjectConfirm(id), m.confirm)
	case m.keepOn != "":
		kept = h.keepOn(r, log, in, m.keepOn, m.keepAs)
	default:
		kept = h.keep(r, log, in, m.keepAs, m.note)
	}
	if !kept {
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	}
	if m.confirm != "" {
		log.Info("callback held for confirmation by Daraja's STK query: nothing published",
			"confirm_reason", m.confirm)
	}
	if !m.publish && m.late == nil {
		return c.JSON(m.status, m.answer)
	}
	// Kept on stkcb.received.<id>: from here on a crash, a failed publish
	// or a hang loses nothing, since the applier (Applier) applies every
	// kept callback whose outcome is not in the stream.
	failpoint.Crash(failpoint.CallbackAfterKeep)
	ctx, cancel = h.opContext(r)
	defer cancel()
	ctx, span := h.traceCallback(ctx, r, id, in.at, m.requestHeader)
	defer span.End()
	log = tracing.Logger(log, ctx)
	if err := h.apply(ctx, log, m, cb, in.id); err != nil {
		tracing.Fail(span, err)
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	}
	return c.JSON(http.StatusOK, accepted)
}

// opContext bounds one step of NATS work. The step finishes even if the
// caller hangs up: once JetStream may have stored something, the answer
// must reflect it in the logs at least.
func (h *handler) opContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), h.timeout)
}

// tokenProblem is why the callback token does not admit a callback for id
// (events.UnmatchedNoToken or UnmatchedBadToken), or "" when it does.
func (h *handler) tokenProblem(id, token string) string {
	switch {
	case token == "":
		return events.UnmatchedNoToken
	case !h.secrets.Verify(id, token):
		return events.UnmatchedBadToken
	}
	return ""
}

// readBody reads at most MaxBodyBytes; more is an *http.MaxBytesError. On
// another error it returns what it read.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxBodyBytes {
		return nil, &http.MaxBytesError{Limit: MaxBodyBytes}
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
}

// canonicalUUID accepts a tracking id in the 8-4-4-4-12 form, in either
// case, and returns it as the api wrote it (lowercase). Nothing else may
// reach a subject: "." or "*" would address other payments.
func canonicalUUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return "", false
	}
	return u.String(), true
}

// pathForLog is what of a callback's path may be logged: the segment after
// the callback prefix (the tracking id), never what follows it (the
// callback token, which lets a callback for that payment through).
func pathForLog(path string) string {
	rest := strings.TrimPrefix(strings.TrimPrefix(path, strings.TrimSuffix(RoutePrefix, "/")), "/")
	first, _, _ := strings.Cut(rest, "/")
	return truncate(redact.Phones(first), 64)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
