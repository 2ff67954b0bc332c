package callback

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// DefaultApplyAfter is the head start of the HTTP handler over the applier:
// the applier looks at a kept callback only this long after it was kept, by
// when the handler has normally published its outcome (the applier then
// finds it and does nothing). It is not needed for safety: an outcome
// published by both is stored once (its Nats-Msg-Id).
const DefaultApplyAfter = 5 * time.Second

// The wait before the applier tries a callback again after a failure of
// NATS itself: applyRetry, doubling with each delivery up to
// applyRetryMax, so that a long outage is not a busy loop.
const (
	applyRetry    = 2 * time.Second
	applyRetryMax = time.Minute
)

// retryDelay is the wait before delivery n+1 of a callback not applied.
func retryDelay(n uint64) time.Duration {
	d := applyRetry
	for i := uint64(1); i < n && d < applyRetryMax; i++ {
		d *= 2
	}
	return min(d, applyRetryMax)
}

// Applier applies every callback kept on stkcb.received.<tracking_id>
// whose outcome is not in the STK stream: one kept by a callback-ingest
// that died before publishing it, whose publish failed, or whose matching
// could not read the stream (kept with the reason "unverified"). It runs
// the handler's own matching and publishing (match, apply) over the kept
// copy, unless the payment's stored outcome is already the copy's (applied:
// one lookup, the common case), through the durable consumer events.CallbackApplyConsumer, which
// every callback-ingest instance shares. A callback it has applied, or
// that needs nothing, is acked; one it could not apply now comes back
// later, for ever (the consumer has no MaxDeliver).
type Applier struct {
	h     *handler
	after time.Duration
}

// NewApplier returns the applier of the handler o describes (o as for
// NewHandler). after is the handler's head start (0 means
// DefaultApplyAfter).
func NewApplier(o Options, after time.Duration) (*Applier, error) {
	h, err := newHandler(o)
	if err != nil {
		return nil, err
	}
	if after <= 0 {
		after = DefaultApplyAfter
	}
	return &Applier{h: h, after: after}, nil
}

// applyConcurrency is how many kept callbacks the applier handles at once.
// Its work is the handler's (match, apply), which HTTP requests run
// concurrently anyway.
const applyConcurrency = 4

// Run creates (or updates) the callback-apply consumer and applies kept
// callbacks until ctx is cancelled; then it lets the callbacks in hand
// finish (for up to shutdownTimeout) and returns nil.
func (a *Applier) Run(ctx context.Context) error {
	create := func(ctx context.Context) (jetstream.Consumer, error) {
		return a.h.js.CreateOrUpdateConsumer(ctx, events.CallbackStreamName, events.CallbackApplyConsumer())
	}
	cons, err := worker.RetryStart(ctx, a.h.log, "create consumer "+events.ConsumerCallbackApply, create)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	// The pool's lines are about the consumer, no payment's: an empty
	// tracking_id says so, as callback-ingest's every line carries one.
	worker.Pool{Name: events.ConsumerCallbackApply, Concurrency: applyConcurrency, ShutdownTimeout: shutdownTimeout,
		Recreate: create, Log: a.h.log.With("tracking_id", ""), Metrics: a.h.metrics}.
		Run(ctx, cons, func(_, _ context.Context, msg jetstream.Msg) { a.handle(msg) })
	return nil
}

// handle settles one kept callback.
//
// The common path is cheap: every kept callback comes first within the
// handler's head start, only to be handed back, and comes again to be
// acked once the stored outcome is found to be the one published from it
// (appliedFrom: one lookup, nothing parsed or decoded). Its logger is built
// only when a line is to be logged: the logger's With cost the applier a
// fifth of its CPU on that path. A callback not applied yet is matched and
// then acted on as match says (act).
func (a *Applier) handle(msg jetstream.Msg) {
	h := a.h
	id := events.TrackingIDOf(msg.Subject())
	var (
		cb     Callback
		parsed bool // cb is the kept callback's, for the logger
		log    *slog.Logger
	)
	logger := func() *slog.Logger {
		if log == nil {
			attrs := []any{"tracking_id", id, "callback_id", msg.Headers().Get(events.CallbackHeaderID), "applier", true}
			if parsed {
				attrs = append(attrs, "checkout_request_id", cb.CheckoutRequestID, "merchant_request_id", cb.MerchantRequestID,
					"result_code", cb.ResultCode)
			}
			log = h.log.With(attrs...)
		}
		return log
	}

	meta, err := msg.Metadata()
	if err != nil {
		logger().Error("kept callback without metadata", "error", err)
		worker.NakLazy(logger, msg, applyRetry)
		return
	}
	retry := retryDelay(meta.NumDelivered)
	if wait := a.after - time.Since(meta.Timestamp); wait > 0 {
		worker.NakLazy(logger, msg, wait)
		return
	}
	if _, ok := canonicalUUID(id); !ok {
		logger().Error("kept callback on a subject without a tracking id: left as it is", "subject", msg.Subject())
		worker.AckLazy(context.Background(), logger, msg, "the callback will be looked at again")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
	applied := a.appliedFrom(ctx, id, msg.Headers().Get(events.CallbackHeaderID))
	cancel()
	if applied {
		worker.AckLazy(context.Background(), logger, msg, "the callback will be looked at again")
		return
	}
	cb, err = ParseCallback(msg.Data())
	if err != nil {
		// Only a callback that parsed is kept on stkcb.received; a parser
		// since made stricter is no reason to lose it, and no retry mends it.
		logger().Error("kept callback no longer parses: not applied", "error", err)
		worker.AckLazy(context.Background(), logger, msg, "the callback will be looked at again")
		return
	}
	parsed = true

	ctx, cancel = context.WithTimeout(context.Background(), h.timeout)
	applied = a.applied(ctx, logger, id, cb)
	cancel()
	if applied {
		worker.AckLazy(context.Background(), logger, msg, "the callback will be looked at again")
		return
	}
	log = logger()
	ctx, cancel = context.WithTimeout(context.Background(), h.timeout)
	m := h.match(ctx, log, id, cb, receivedAt(msg, meta))
	cancel()
	if !a.act(log, msg, meta, id, cb, m, retry) {
		return
	}
	worker.Ack(context.Background(), log, msg, "the callback will be looked at again")
}

// act does what m says of a kept callback: it holds it for Daraja's STK
// query, publishes it, keeps it again for an operator, or leaves it. false:
// msg was nak'ed to be tried again after retry.
func (a *Applier) act(log *slog.Logger, msg jetstream.Msg, meta *jetstream.MsgMetadata, id string, cb Callback, m matched, retry time.Duration) bool {
	h := a.h
	switch {
	case m.retry:
		worker.Nak(log, msg, retry)
		return false
	case m.confirm != "":
		// Held for Daraja's STK query, as the handler would have held it
		// had it matched it at once.
		if err := a.keepForConfirmation(msg, meta.Sequence.Stream, id, m); err != nil {
			log.Error("keep callback for confirmation", "error", err)
			worker.Nak(log, msg, retry)
			return false
		}
		log.Info("kept callback held for confirmation by Daraja's STK query", "confirm_reason", m.confirm)
	case m.publish || m.late != nil:
		ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
		err := h.apply(ctx, log, m, cb, msg.Headers().Get(events.CallbackHeaderID))
		cancel()
		if err != nil {
			worker.Nak(log, msg, retry)
			return false
		}
		if m.publish {
			log.Warn("kept callback applied by the applier: its outcome was not in the stream")
		}
	case m.keepOn != "":
		// Kept for an operator on its own subject, as the handler would
		// have kept it.
		if err := a.keepAgain(msg, meta.Sequence.Stream, m.keepOn, m.keepAs, "unmatched", m); err != nil {
			log.Error("keep callback for an operator", "subject", m.keepOn, "error", err)
			worker.Nak(log, msg, retry)
			return false
		}
	case m.keepAs != "":
		// Another push, an unknown id, a conflict: the copy stays where it
		// is for an operator; match logged why.
		log.Warn("kept callback not applied", "reason", m.keepAs)
	}
	return true
}

// applied says whether the payment's stored stk.completed is already cb's
// outcome: the common case, a callback the handler applied 5 s before
// (DefaultApplyAfter). Then the whole match would decide nothing either: with
// the outcome stored it publishes nothing and holds nothing (unknown id,
// another push, repeated: each only acked), so one lookup settles it. Any
// other answer, a failed lookup included, leaves it to match.
func (a *Applier) applied(ctx context.Context, log func() *slog.Logger, id string, cb Callback) bool {
	prev, err := lastEvent[events.Completed](ctx, a.h.js, a.h.stream, events.TypeCompleted, id)
	if err != nil || !repeats(prev, cb) {
		return false
	}
	// The common case, every callback the handler applied: the handler
	// logged its outcome then ("callback accepted"), and this line, at
	// debug level, says only that the applier found it so.
	if a.h.log.Enabled(ctx, slog.LevelDebug) {
		log().Debug("repeated callback: the outcome is already stored", "stored_source", prev.Source)
	}
	return true
}

// appliedFrom says whether the payment's stored stk.completed was published
// from the kept callback callbackID (its events.CallbackHeaderID, which
// complete puts on it): then it is that callback's outcome, applied, and
// applied would say so after parsing the callback and decoding the outcome
// (a parser since made stricter does not undo an outcome published). Any
// other answer (another callback's outcome, one published by another
// source, or before outcomes named their callback, a failed lookup) is
// left to applied and match.
func (a *Applier) appliedFrom(ctx context.Context, id, callbackID string) bool {
	if callbackID == "" {
		return false
	}
	msg, err := events.LastMsg(ctx, a.h.js, a.h.stream, events.Subject(events.TypeCompleted, id))
	return err == nil && msg.Header.Get(events.CallbackHeaderID) == callbackID
}

// receivedAt is when a kept callback arrived: its Stkgate-Received-At, or,
// when that is missing or unreadable, when JetStream stored it.
func receivedAt(msg jetstream.Msg, meta *jetstream.MsgMetadata) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, msg.Headers().Get(events.CallbackHeaderReceivedAt)); err == nil {
		return t
	}
	return meta.Timestamp
}

// keepForConfirmation copies a kept callback (at stream sequence seq) to
// stkcb.confirm.<id>, with m's reason (and receipt holder).
func (a *Applier) keepForConfirmation(msg jetstream.Msg, seq uint64, id string, m matched) error {
	return a.keepAgain(msg, seq, events.CallbackSubjectConfirm(id), m.confirm, "confirm", m)
}

// keepAgain copies a kept callback (at stream sequence seq) to subject with
// reason (and m's receipt holder, if any). Its Nats-Msg-Id is derived from
// seq and tag, so a second try within the duplicate window is stored once.
func (a *Applier) keepAgain(msg jetstream.Msg, seq uint64, subject, reason, tag string, m matched) error {
	out := events.KeepAgain(msg, subject, reason)
	setReceiptHolder(out.Header, m)
	ctx, cancel := context.WithTimeout(context.Background(), a.h.timeout)
	defer cancel()
	_, err := a.h.js.PublishMsg(ctx, out,
		jetstream.WithMsgID(fmt.Sprintf("callback-apply:%d:%s", seq, tag)),
		jetstream.WithExpectStream(events.CallbackStreamName))
	return err
}
