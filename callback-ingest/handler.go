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

// errNotFound: no event on the subject.
var errNotFound = errors.New("no such event")

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

// refuseSource keeps and refuses a callback from a source the allowlist
// does not name.
func (h *handler) refuseSource(c echo.Context, a arrival, source string) error {
	// Kept all the same: Safaricom never sends a callback twice, and a
	// genuine one refused by an outdated allowlist is still money.
	a.in.detail = strings.TrimPrefix(a.in.detail+"; source "+source, "; ")
	stored, ok := true, false
	if a.unauthentic == "" {
		ok = h.keepOn(a.r, a.log, a.in, events.CallbackSubjectRefused(events.UnmatchedForbiddenSource, a.id), events.UnmatchedForbiddenSource)
	} else {
		stored, ok = h.keepRefused(a.r, a.log, a.in, events.UnmatchedForbiddenSource)
	}
	if !ok {
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	}
	if stored {
		a.log.Warn("callback refused: source not in CALLBACK_ALLOW_CIDRS", "source", source,
			"remote_addr", a.r.RemoteAddr, "bytes", len(a.in.body), "token_valid", a.unauthentic == "")
	}
	return c.JSON(http.StatusForbidden, forbidden)
}

// refuseUnreadable keeps and refuses a callback whose body could not be
// read whole.
func (h *handler) refuseUnreadable(c echo.Context, a arrival) error {
	stored, ok := true, false
	if a.unauthentic == "" {
		ok = h.keep(a.r, a.log, a.in, events.UnmatchedUnparseable, "")
	} else {
		stored, ok = h.keepRefused(a.r, a.log, a.in, a.unauthentic)
	}
	if !ok {
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	}
	if stored {
		a.log.Warn("callback rejected: body unreadable", "error", a.readErr, "bytes", len(a.in.body), "token_valid", a.unauthentic == "")
	}
	return c.JSON(http.StatusBadRequest, rejected("body unreadable"))
}

// refuseBadPath keeps and refuses a callback whose path names no tracking
// id.
func (h *handler) refuseBadPath(c echo.Context, a arrival) error {
	stored, ok := h.keepRefused(a.r, a.log, a.in, events.UnmatchedBadPath)
	if !ok {
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	}
	if stored {
		a.log.Warn("callback for a malformed tracking id", "bytes", len(a.in.body))
	}
	return c.JSON(http.StatusNotFound, unknownID)
}

// refuseUnauthentic keeps a callback without the tracking id's token.
//
// A callback without the tracking id's token changes nothing. It is
// answered as an applied one (Safaricom never retries, and a forger
// learns nothing), and kept for inspection.
func (h *handler) refuseUnauthentic(c echo.Context, a arrival, source string) error {
	reason := a.unauthentic
	stored, ok := h.keepRefused(a.r, a.log, a.in, reason)
	switch {
	case !ok:
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	case !stored:
	case reason == events.UnmatchedNoToken:
		a.log.Warn("callback without a token, not applied: a push sent before CALLBACK_SECRET (the reconciler's STK query finishes it) or a forgery",
			"source", source, "bytes", len(a.in.body))
	default:
		a.log.Warn("callback with a wrong token, not applied: a forgery, or a CALLBACK_SECRET dropped while its pushes were in flight",
			"source", source, "bytes", len(a.in.body))
	}
	return c.JSON(http.StatusOK, accepted)
}

// refuseMalformed keeps and refuses an authentic callback that does not
// parse (ParseCallback's err).
func (h *handler) refuseMalformed(c echo.Context, a arrival, err error) error {
	reason := "malformed"
	var inv *InvalidError
	if errors.As(err, &inv) {
		reason = inv.Reason
	}
	a.in.detail = reason
	if !h.keep(a.r, a.log, a.in, events.UnmatchedUnparseable, "") {
		return c.JSON(http.StatusServiceUnavailable, unavailable)
	}
	a.log.Warn("callback rejected", "reason", reason, "bytes", len(a.in.body))
	return c.JSON(http.StatusBadRequest, rejected(reason))
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

// matched is what the stream says of a parsed callback: where to keep it,
// and either the answer or what is to be published (apply).
type matched struct {
	// keepAs is an events.Unmatched* reason, or "" for a callback of a
	// known payment (kept on stkcb.received.<id>, where the applier finds
	// it).
	keepAs string
	// keepOn, when set, is the subject of a keepAs copy in place of the
	// shared stkcb.unmatched.<reason>: events.CallbackSubjectRefused, for a
	// callback whose token was right (no flood of forgeries for other
	// payments can push it out).
	keepOn string
	// note goes into the kept copy's reason header of a matched callback
	// (reasonRepeated, reasonUnverified, reasonLate).
	note string
	// confirm is an events.Confirm* reason: the callback is kept on
	// stkcb.confirm.<id> for the reconciler and nothing is published.
	confirm string
	// holder is, for events.ConfirmReceiptTaken, the payment that claimed
	// the callback's receipt (receipt, upper case) first.
	holder, receipt string
	// publish: the callback's stk.completed is to be published.
	publish bool
	// late is the payment's stored outcome, one stkgate decided itself
	// (events.DecidedByStkgate): the callback is published as
	// stk.late_result, never as a second stk.completed.
	late *events.Completed
	// retry: what the stream knows of the payment could not be read now;
	// the applier tries again.
	retry bool
	req   events.Requested
	// requestHeader is the headers of the payment's stored stk.requested
	// (its traceparent: traceCallback), nil when it was not found.
	requestHeader nats.Header
	status        int
	answer        Answer
}

// Reasons of a callback kept on stkcb.received.<id> (its
// CallbackHeaderReason); none for one applied at once.
const (
	// reasonRepeated: the payment already has the callback's outcome.
	reasonRepeated = "repeated"
	// reasonUnverified: a lookup failed; the applier applies it later.
	reasonUnverified = "unverified"
	// reasonLate: the payment was finished with an outcome stkgate decided
	// itself; the callback is published as stk.late_result.
	reasonLate = events.CallbackReasonLate
)

// match checks the callback against what the stream knows of the payment.
// The HTTP handler and the applier both decide through it.
//
// A callback that is kept but not applied (unknown tracking id, another
// push, a conflicting outcome) is answered 200: Safaricom never retries, the
// copy is what an operator works from, and the same answer for known and
// unknown tracking ids tells a prober nothing.
//
// A lookup that failed (NATS trouble) keeps the callback on
// stkcb.received.<id>, where the applier tries again; only a stored event
// that cannot be read, which no retry mends, keeps it as
// events.UnmatchedUnverified.
//
// receivedAt is when the callback arrived (the applier passes the kept
// copy's time, not its own): how soon after the push a failure came is
// measured from it (confirmation).
func (h *handler) match(ctx context.Context, log *slog.Logger, id string, cb Callback, receivedAt time.Time) (m matched) {
	unreadable := func(status int, answer Answer) matched {
		return matched{keepAs: events.UnmatchedUnverified, status: status, answer: answer}
	}
	retry := matched{note: reasonUnverified, retry: true, status: http.StatusServiceUnavailable, answer: unavailable}
	l := h.lookUp(ctx, id)
	defer func() { m.requestHeader = l.reqHeader }()
	req, err := l.req, l.reqErr
	switch {
	case errors.Is(err, errNotFound):
		log.Warn("callback for an unknown tracking id", outcomeAttrs(cb)...)
		return matched{keepAs: events.UnmatchedUnknownID, status: http.StatusOK, answer: accepted}
	case errors.Is(err, events.ErrMalformed):
		log.Error("stored stk.requested is unreadable", "error", err)
		return unreadable(http.StatusInternalServerError, internal)
	case err != nil:
		log.Error("look up stk.requested: the callback is kept for the applier", "error", err)
		return retry
	}

	// How soon after its push a failure came (confirmation) is measured
	// from the latest moment Daraja can have processed the push: its
	// answer, which stk.dispatched follows, so a failure fast by it is
	// surely fast. Not from the request: a request that waited its turn
	// for the phone an hour was pushed just now.
	pushAt := receivedAt
	disp, dispAt, err := l.disp, l.dispAt, l.dispErr
	if err == nil {
		pushAt = dispAt
	}
	switch {
	case errors.Is(err, errNotFound):
		// The dispatcher publishes stk.dispatched right after Daraja's
		// answer, so it is normally there; without it there is nothing to
		// check the CheckoutRequestID against. It is not held for Daraja's
		// STK query for that: when Daraja's answer to the push was lost
		// there is no CheckoutRequestID to query, and this callback, its
		// token checked, is the only word there will be of the payment.
		// The dispatcher's record of the push stands in for it
		// (pushAnswer): a failure is held when it came fast by that
		// record, as a forger holding the CallBackURL could otherwise post
		// one while the push's answer is on its way; and a callback for
		// another push than the one the record names is not applied.
		log.Info("callback before stk.dispatched")
		var checkoutID string
		if pushAt, checkoutID, err = h.pushAnswer(ctx, log, id, receivedAt); err != nil {
			log.Error("look up the push's attempt record: the callback is kept for the applier", "error", err)
			return retry
		}
		if checkoutID != "" && checkoutID != cb.CheckoutRequestID {
			log.Warn("callback for another push",
				append([]any{"recorded_checkout_request_id", checkoutID}, outcomeAttrs(cb)...)...)
			return matched{keepAs: events.UnmatchedOtherPush, status: http.StatusOK, answer: accepted}
		}
	case errors.Is(err, events.ErrMalformed):
		log.Error("stored stk.dispatched is unreadable", "error", err)
		return unreadable(http.StatusInternalServerError, internal)
	case err != nil:
		log.Error("look up stk.dispatched: the callback is kept for the applier", "error", err)
		return retry
	case disp.CheckoutRequestID != cb.CheckoutRequestID:
		log.Warn("callback for another push",
			append([]any{"dispatched_checkout_request_id", disp.CheckoutRequestID}, outcomeAttrs(cb)...)...)
		return matched{keepAs: events.UnmatchedOtherPush, status: http.StatusOK, answer: accepted}
	case disp.MerchantRequestID != cb.MerchantRequestID:
		log.Warn("callback's MerchantRequestID differs from the push's",
			"dispatched_merchant_request_id", disp.MerchantRequestID)
	}

	// A payment has one final outcome. Checking before publishing also
	// covers a callback repeated after JetStream's duplicate window.
	switch st, prev, err := h.classifyCompleted(log, cb, l.done, l.doneErr); {
	case err != nil:
		return retry
	case st == stateRepeated:
		return matched{note: reasonRepeated, status: http.StatusOK, answer: accepted}
	case st == stateLate:
		return h.matchLate(ctx, log, id, cb, req, prev, disp.CheckoutRequestID, receivedAt.Sub(pushAt))
	case st == stateConflict:
		return matched{keepAs: events.UnmatchedConflict, status: http.StatusOK, answer: accepted}
	case st == stateUnreadable:
		return unreadable(http.StatusOK, accepted)
	}
	if held, ok := h.checked(ctx, log, id, req.Payment, cb, receivedAt.Sub(pushAt)); !ok {
		return held
	}
	return matched{publish: true, req: req}
}

// lookups is what match reads of a payment in the STK stream: its newest
// stk.requested, stk.dispatched (with its envelope time) and stk.completed,
// each with the error of its lookup (errNotFound when there is none).
type lookups struct {
	req       events.Requested
	reqHeader nats.Header
	reqErr    error
	disp      events.Dispatched
	dispAt    time.Time
	dispErr   error
	done      events.Completed
	doneErr   error
}

// lookUp reads the payment's requested, dispatched and completed events at
// once: three JetStream round trips in the time of one. None of the three
// reads depends on another, and none changes anything; match decides from
// them in the order it always did, so a result it does not reach is neither
// logged nor acted on. What the concurrency changes is only when each is
// read within match's moment, and an outcome published by another source
// after its read is a race match always had (complete's duplicate check).
// The reads that do depend on these stay after them: the push's attempt
// record (pushAnswer) is read only once stk.dispatched was not found, and
// the receipt is claimed (checked) only once no outcome was.
//
// stk.completed is asked of the stream's leader at once: it is normally
// not stored yet when the callback comes, and a direct get's "not found"
// (which any replica may answer) is confirmed with the leader in any case
// (events.LastMsg), a second round trip after the first. The leader's
// answer is the one that confirmation would have given.
func (h *handler) lookUp(ctx context.Context, id string) lookups {
	var l lookups
	var wg sync.WaitGroup
	wg.Go(func() {
		l.disp, l.dispAt, l.dispErr = lastEventAt[events.Dispatched](ctx, h.js, h.stream, events.TypeDispatched, id)
	})
	wg.Go(func() {
		// A payment's outcome is normally not stored yet when its callback
		// comes; that "not found" would be confirmed with the leader.
		l.done, l.doneErr = lastEventFromLeader[events.Completed](ctx, h.js, h.stream, events.TypeCompleted, id)
	})
	subject := events.Subject(events.TypeRequested, id)
	msg, err := events.LastMsg(ctx, h.js, h.stream, subject)
	if l.req, _, l.reqErr = decodeLast[events.Requested](subject, id, msg, err); l.reqErr == nil {
		l.reqHeader = msg.Header
	}
	wg.Wait()
	return l
}

// checked puts a callback about to count through the checks of its kind
// (confirmation) and claims a success's receipt (claimReceipt). ok means
// it counts as it stands; otherwise m says why not: held for Daraja's STK
// query (m.confirm), or to be tried again (m.retry).
func (h *handler) checked(ctx context.Context, log *slog.Logger, id string, p events.Payment, cb Callback, sincePush time.Duration) (m matched, ok bool) {
	if reason := h.confirmation(log, p, cb, sincePush); reason != "" {
		return matched{confirm: reason, status: http.StatusOK, answer: accepted}, false
	}
	if !cb.Success() {
		return matched{}, true
	}
	// A success about to count: its receipt must be no other payment's.
	// Even CALLBACK_CONFIRM=never holds it then: counted, it would only be
	// recorded as an invalid outcome (the api's unique index), while
	// Daraja's query can tell whether this payment was paid.
	holder, err := h.claimReceipt(ctx, id, cb.Receipt)
	switch {
	case err != nil:
		log.Error("claim the receipt: the callback is kept for the applier", "error", err)
		return matched{note: reasonUnverified, retry: true, status: http.StatusServiceUnavailable, answer: unavailable}, false
	case holder != "":
		log.Warn("success callback names a receipt another payment claimed first: held for Daraja's STK query",
			"confirm_reason", events.ConfirmReceiptTaken, "receipt", cb.Receipt, "receipt_holder", holder)
		return matched{confirm: events.ConfirmReceiptTaken, holder: holder, receipt: events.ReceiptKey(cb.Receipt),
			status: http.StatusOK, answer: accepted}, false
	}
	return matched{}, true
}

// matchLate decides a callback for a payment stkgate finished itself
// (prev, events.DecidedByStkgate): it is published as stk.late_result, and
// a late Success there tells the merchant the payment was paid, with its
// receipt. So a success goes through the checks of any success (checked):
// one that fails them (its receipt another payment's, its amount or phone
// not the request's) is held for Daraja's STK query when the push has a
// CheckoutRequestID (checkoutID; the reconciler publishes Daraja's answer
// as the late result), and, when the push's answer was lost and there is
// nothing to query, kept for an operator on
// stkcb.unmatched.late_unconfirmed.<id>: nothing of it is published, and
// the payment stays Unknown. A failure pays nobody and is published as it
// stands: a late success replaces it (lateResult), so a forged one hides
// nothing.
func (h *handler) matchLate(ctx context.Context, log *slog.Logger, id string, cb Callback, req events.Requested,
	prev events.Completed, checkoutID string, sincePush time.Duration) matched {
	late := matched{note: reasonLate, late: &prev, req: req, status: http.StatusOK, answer: accepted}
	if !cb.Success() {
		return late
	}
	m, ok := h.checked(ctx, log, id, req.Payment, cb, sincePush)
	switch {
	case ok:
		return late
	case m.retry || checkoutID != "":
		return m
	}
	log.Error("LATE SUCCESS NOT CONFIRMED: a success callback for a payment stkgate finished itself fails the checks of any success, and its push has no CheckoutRequestID for Daraja's STK query: kept for an operator, nothing published; the payment stays "+label(prev.ResultCode),
		append([]any{"confirm_reason", m.confirm, "receipt_holder", m.holder, "final_result_code", prev.ResultCode,
			"requested_amount", req.Amount}, outcomeAttrs(cb)...)...)
	return matched{keepAs: events.UnmatchedLateUnconfirmed, keepOn: events.CallbackSubjectRefused(events.UnmatchedLateUnconfirmed, id),
		status: http.StatusOK, answer: accepted}
}

// label is the status label of a result code.
func label(code string) string {
	_, l := events.Outcome(code)
	return l
}

// setReceiptHolder names, on the copy of a callback held because its
// receipt was taken, the receipt and its holder, for the reconciler.
func setReceiptHolder(h nats.Header, m matched) {
	if m.holder == "" {
		return
	}
	h.Set(events.CallbackHeaderReceipt, m.receipt)
	h.Set(events.CallbackHeaderReceiptHolder, m.holder)
}

// apply publishes what m says of a kept callback (callbackID, the kept
// copy's events.CallbackHeaderID): its stk.completed, or its
// stk.late_result. An error means nothing may have been stored: the applier
// tries again (the events' Nats-Msg-Id and match's look at the stored
// outcome make a second try harmless).
func (h *handler) apply(ctx context.Context, log *slog.Logger, m matched, cb Callback, callbackID string) error {
	if m.late != nil {
		return h.lateResult(ctx, log, *m.late, cb)
	}
	return h.complete(ctx, log, m.req, cb, callbackID)
}

// complete publishes the stk.completed of a matched callback, naming the
// kept copy it comes from (events.CallbackHeaderID): the applier, finding
// that name on the stored outcome, knows the copy applied without reading
// either (Applier.appliedFrom).
func (h *handler) complete(ctx context.Context, log *slog.Logger, req events.Requested, cb Callback, callbackID string) error {
	ev := events.Completed{
		Payment:           req.Payment,
		ResultCode:        cb.ResultCode,
		ResultDesc:        cb.ResultDesc,
		Source:            events.SourceCallback,
		MerchantRequestID: cb.MerchantRequestID,
		CheckoutRequestID: cb.CheckoutRequestID,
		CompletedAt:       h.now().UTC(),
	}
	if cb.Success() {
		ev.Receipt = cb.Receipt
		ev.TransactionDate = cb.TransactionDate
	}
	var header nats.Header
	if callbackID != "" {
		header = nats.Header{events.CallbackHeaderID: []string{callbackID}}
	}
	ack, err := h.pub.PublishWithHeader(ctx, ev, header)
	if err != nil {
		log.Error("publish stk.completed", "error", err)
		return err
	}
	if ack.Duplicate {
		// Another copy of this callback (or another source) won the race
		// inside the duplicate window: the reconciler's no_answer, say,
		// published after match looked. Then the callback is a late result.
		st, prev, err := h.completedState(ctx, log, req.TrackingID, cb)
		switch {
		case err != nil:
			log.Warn("publish was a duplicate; the stored outcome could not be read", "error", err)
			return err
		case st == stateLate:
			return h.lateResult(ctx, log, prev, cb)
		}
		return nil
	}
	_, label := events.Outcome(cb.ResultCode)
	log.Info("callback accepted", "status_label", label, "receipt", ev.Receipt, "seq", ack.Sequence)
	return nil
}

// lateResult publishes a callback for a payment stkgate finished with an
// outcome of its own (prev) as stk.late_result: Daraja's word, shown beside
// the final outcome, which stays. A stored late result is left as it is,
// but for a failure, which a success replaces (events.LateReplaces): a
// failure anyone with the CallBackURL can send at once must not hide the
// customer's payment. events.PublishLate decides against the stored one and
// publishes in one step, so a late failure racing a late success is never
// stored after it.
func (h *handler) lateResult(ctx context.Context, log *slog.Logger, prev events.Completed, cb Callback) error {
	ev := events.LateResult{
		Payment:           prev.Payment,
		FollowsCode:       prev.ResultCode,
		ResultCode:        cb.ResultCode,
		ResultDesc:        cb.ResultDesc,
		Source:            events.SourceCallback,
		MerchantRequestID: cb.MerchantRequestID,
		CheckoutRequestID: cb.CheckoutRequestID,
		LearntAt:          h.now().UTC(),
	}
	if cb.Success() {
		ev.Receipt = cb.Receipt
		ev.TransactionDate = cb.TransactionDate
	}
	res, err := h.pub.PublishLate(ctx, h.stream, ev)
	stored := res.Stored
	switch {
	case errors.Is(err, events.ErrMalformed):
		log.Error("stored stk.late_result is unreadable; callback not published", append(outcomeAttrs(cb), "error", err)...)
		return nil
	case err != nil:
		log.Error("publish stk.late_result", "error", err)
		return err
	case res.Ack == nil && stored.ResultCode == cb.ResultCode && stored.Receipt == receiptOf(cb):
		log.Info("repeated late callback: its late result is already stored")
		return nil
	case res.Ack == nil:
		log.Error("a second late callback differs from the stored late result, which stands; not published",
			append([]any{"stored_late_result_code", stored.ResultCode, "stored_late_receipt", stored.Receipt}, outcomeAttrs(cb)...)...)
		return nil
	case res.HadStored:
		log.Warn("a late success replaces the stored late failure", "stored_late_result_code", stored.ResultCode,
			"stored_late_source", stored.Source)
	}
	_, label := events.Outcome(cb.ResultCode)
	_, final := events.Outcome(prev.ResultCode)
	log.Warn("late callback: published as stk.late_result; the payment's outcome stays",
		append([]any{"final_result_code", prev.ResultCode, "final_status_label", final, "late_status_label", label,
			"seq", res.Ack.Sequence, "duplicate", res.Ack.Duplicate}, outcomeAttrs(cb)...)...)
	return nil
}

// completedState is whether the payment already has its stk.completed, and
// how it compares with this callback, which it logs.
type completedState int

const (
	stateNone       completedState = iota // no outcome yet
	stateRepeated                         // the same outcome is stored
	stateConflict                         // another outcome, Daraja's, is stored
	stateLate                             // an outcome stkgate decided itself is stored
	stateUnreadable                       // an outcome is stored that cannot be read
)

// completedState also returns the stored outcome, if any.
func (h *handler) completedState(ctx context.Context, log *slog.Logger, id string, cb Callback) (completedState, events.Completed, error) {
	prev, err := lastEvent[events.Completed](ctx, h.js, h.stream, events.TypeCompleted, id)
	return h.classifyCompleted(log, cb, prev, err)
}

// classifyCompleted is completedState from the lookup of the stored
// outcome: prev and err, as lastEvent returned them.
func (h *handler) classifyCompleted(log *slog.Logger, cb Callback, prev events.Completed, err error) (completedState, events.Completed, error) {
	switch {
	case errors.Is(err, errNotFound):
		return stateNone, prev, nil
	case errors.Is(err, events.ErrMalformed):
		// The stream has a final outcome even if this copy cannot read it;
		// a second one would only add to the confusion.
		log.Error("stored stk.completed is unreadable; callback not published",
			append(outcomeAttrs(cb), "error", err)...)
		return stateUnreadable, prev, nil
	case err != nil:
		log.Error("look up stk.completed", "error", err)
		return stateNone, prev, err
	}
	if repeats(prev, cb) {
		log.Info("repeated callback: the outcome is already stored", "stored_source", prev.Source)
		return stateRepeated, prev, nil
	}
	if events.DecidedByStkgate(prev.ResultCode) {
		// stkgate finished the payment without Daraja's word (no answer
		// in time, a deadline): Daraja's word now is shown beside it.
		return stateLate, prev, nil
	}
	// Money may be at stake (a success after a stored failure, or the
	// reverse): this line, and the kept copy, are what an operator
	// reconciles from.
	log.Error("callback conflicts with the stored outcome; callback not published",
		append([]any{
			"stored_source", prev.Source,
			"stored_result_code", prev.ResultCode,
			"stored_receipt", prev.Receipt,
		}, outcomeAttrs(cb)...)...)
	return stateConflict, prev, nil
}

// repeats says whether the stored outcome prev is cb's: the same result
// code and receipt.
func repeats(prev events.Completed, cb Callback) bool {
	return prev.ResultCode == cb.ResultCode && prev.Receipt == receiptOf(cb)
}

// outcomeAttrs is what an operator needs to reconcile a callback that was not
// published (the result code is already on the logger).
func outcomeAttrs(cb Callback) []any {
	return []any{
		"receipt", receiptOf(cb),
		"result_desc", cb.ResultDesc,
		"transaction_date", cb.TransactionDate,
		"amount", cb.Amount,
		"phone", events.MaskPhone(cb.Phone),
	}
}

// receiptOf is the receipt an stk.completed carries: only a success has one.
func receiptOf(cb Callback) string {
	if cb.Success() {
		return cb.Receipt
	}
	return ""
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

// lastEvent returns the newest event of type typ for id. A stored event of
// the wrong type or for another payment is events.ErrMalformed.
//
// A replica's "not found" is confirmed by the stream's leader
// (events.LastMsg): it would send a genuine callback to unknown_id, or
// publish a second outcome.
func lastEvent[E events.Event](ctx context.Context, js jetstream.JetStream, s jetstream.Stream, typ, id string) (E, error) {
	e, _, err := lastEventAt[E](ctx, js, s, typ, id)
	return e, err
}

// lastEventAt is lastEvent with the event's envelope time: when its
// publisher (another service, on its own clock) published it.
func lastEventAt[E events.Event](ctx context.Context, js jetstream.JetStream, s jetstream.Stream, typ, id string) (E, time.Time, error) {
	subject := events.Subject(typ, id)
	msg, err := events.LastMsg(ctx, js, s, subject)
	e, at, err := decodeLast[E](subject, id, msg, err)
	return e, at, err
}

// lastEventFromLeader is lastEvent asking the stream's leader at once
// (events.LastMsgFromLeader): for an event that is usually not there yet,
// whose "not found" lastEvent would ask the leader to confirm anyway, it
// is one round trip instead of two, and the same answer.
func lastEventFromLeader[E events.Event](ctx context.Context, js jetstream.JetStream, s jetstream.Stream, typ, id string) (E, error) {
	subject := events.Subject(typ, id)
	msg, err := events.LastMsgFromLeader(ctx, js, s.CachedInfo().Config.Name, subject)
	e, _, err := decodeLast[E](subject, id, msg, err)
	return e, err
}

// decodeLast is lastEventAt's decoding of the newest message on subject,
// msg, as it was read (err).
func decodeLast[E events.Event](subject, id string, msg *jetstream.RawStreamMsg, err error) (E, time.Time, error) {
	var zero E
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return zero, time.Time{}, errNotFound
	}
	if err != nil {
		return zero, time.Time{}, fmt.Errorf("get %s: %w", subject, err)
	}
	env, err := events.DecodeAs[E](msg.Data)
	if err != nil {
		return zero, time.Time{}, fmt.Errorf("decode %s: %w", subject, err)
	}
	if env.Subject != id {
		return zero, time.Time{}, fmt.Errorf("%w: %s holds %s for %q", events.ErrMalformed, subject, env.Type, env.Subject)
	}
	return env.Data, env.Time, nil
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
	return truncate(first, 64)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
