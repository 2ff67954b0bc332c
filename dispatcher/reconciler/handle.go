package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// retryDelay is the wait after a failure of NATS itself (a lookup or a
// publish): short, since nothing is wrong with the payment.
const retryDelay = 2 * time.Second

// handleDispatched follows one stk.dispatched: done once stk.completed is in
// the stream; otherwise, ReconcileAfter after the push, Daraja is queried.
func (r *reconciler) handleDispatched(work context.Context, log *slog.Logger, msg jetstream.Msg) {
	// The envelope and its data in one pass (another type is malformed).
	env, err := events.DecodeAs[events.Dispatched](msg.Data())
	if err != nil {
		term(log, msg, err.Error())
		return
	}
	d := env.Data
	if d.TrackingID != events.TrackingIDOf(msg.Subject()) {
		term(log, msg, fmt.Sprintf("%s event on subject %s", d.Type(), msg.Subject()))
		return
	}
	log = log.With("checkout_request_id", d.CheckoutRequestID)
	if done, err := r.completed(work, d.TrackingID); err != nil {
		log.Warn("cannot tell whether the payment is complete; checking later", "error", err)
		later(log, msg, retryDelay)
		return
	} else if done {
		ack(work, log, msg)
		return
	}
	p := push{
		payment:    d.Payment,
		merchantID: d.MerchantRequestID,
		checkoutID: d.CheckoutRequestID,
		sentAt:     storedAt(msg, env.Time),
	}
	// The prompt has lived since the push Daraja accepted left, a little
	// before Daraja's answer was recorded (not since the first call: a
	// push deferred a minute prompted the customer at its later call).
	if a, _, found, err := r.attempt(work, d.TrackingID); err == nil && found {
		if at := promptSince(a); !at.IsZero() && at.Before(p.sentAt) {
			p.sentAt = at
		}
	}
	if p.checkoutID == "" {
		// Nothing to query: it can only be waited on, as a push whose
		// answer was lost.
		log.Error("stk.dispatched without a CheckoutRequestID: waiting for the callback until the prompt's lifetime has passed")
		r.noAnswer(work, log, msg, d.Payment, p.sentAt)
		return
	}
	r.reconcilePush(work, log, msg, p)
}

// handleRequested follows one stk.requested: done once stk.completed or
// stk.dispatched is in the stream (a dispatched push is handleDispatched's);
// otherwise the dispatcher's attempt record says what to wait for
// (followRecord), or its absence does (followNoRecord).
func (r *reconciler) handleRequested(work context.Context, log *slog.Logger, msg jetstream.Msg) {
	env, err := events.DecodeAs[events.Requested](msg.Data())
	if err != nil {
		term(log, msg, err.Error())
		return
	}
	req := env.Data
	if req.TrackingID != events.TrackingIDOf(msg.Subject()) {
		term(log, msg, fmt.Sprintf("%s event on subject %s", req.Type(), msg.Subject()))
		return
	}
	id := req.TrackingID
	if r.settledElsewhere(work, log, msg, id) {
		return
	}
	a, rev, found, err := r.attempt(work, id)
	if err != nil {
		log.Warn("cannot read the attempt record; checking later", "error", err)
		later(log, msg, retryDelay)
		return
	}
	requestedAt := storedAt(msg, env.Time)
	now := r.clock()
	if !found {
		r.followNoRecord(work, log, msg, req, requestedAt, now)
		return
	}
	r.followRecord(work, log.With("attempt_state", a.State), msg, req, a, rev, requestedAt, now)
}

// settledElsewhere is whether msg is done with (acked, or left for later
// when the stream cannot be read): its payment has stk.completed or
// stk.dispatched, or whether it has cannot be told now.
func (r *reconciler) settledElsewhere(work context.Context, log *slog.Logger, msg jetstream.Msg, id string) bool {
	for _, typ := range []string{events.TypeCompleted, events.TypeDispatched} {
		found, err := r.exists(work, events.Subject(typ, id))
		if err != nil {
			log.Warn("cannot tell whether the payment is dispatched; checking later", "error", err)
			later(log, msg, retryDelay)
			return true
		}
		if found {
			ack(work, log, msg)
			return true
		}
	}
	return false
}

// followNoRecord follows a request without an attempt record.
func (r *reconciler) followNoRecord(work context.Context, log *slog.Logger, msg jetstream.Msg, req events.Requested, requestedAt, now time.Time) {
	// No record: never pushed — unless the record was lost (purged)
	// after a push left, which the push log still shows.
	pushed, err := r.loggedPush(work, req.TrackingID)
	if err != nil {
		log.Warn("cannot read the push log; checking later", "error", err)
		later(log, msg, retryDelay)
		return
	}
	if pushed != nil {
		log.Warn("attempt record gone, but a push left for this request: waiting for its callback as for a push whose answer was lost",
			"calls", pushed.Calls, "sent_at", promptSince(*pushed))
		r.noAnswer(work, log, msg, req.Payment, promptSince(*pushed))
		return
	}
	r.notDispatched(work, log, msg, req.Payment, nil, 0, requestedAt, now)
}

// followRecord follows a request by its attempt record a (revision rev).
func (r *reconciler) followRecord(work context.Context, log *slog.Logger, msg jetstream.Msg, req events.Requested, a events.Attempt, rev uint64, requestedAt, now time.Time) {
	switch {
	case a.CheckoutRequestID != "":
		// Daraja accepted the push but stk.dispatched is not (yet) in the
		// stream: the dispatcher stopped in between, or could not publish.
		// The push is reconciled from the record.
		sentAt := promptSince(a)
		if sentAt.IsZero() {
			sentAt = a.UpdatedAt
		}
		r.reconcilePush(work, log.With("checkout_request_id", a.CheckoutRequestID), msg, push{
			payment: req.Payment, merchantID: a.MerchantRequestID, checkoutID: a.CheckoutRequestID, sentAt: sentAt,
		})
	case a.State == events.AttemptRefused, a.State == events.AttemptGaveUp:
		r.recordedOutcome(work, log, msg, req.Payment, a, now)
	case a.State == events.AttemptNotSent && a.Uncertain:
		// Not pushed again, but an earlier push answered 503 may have
		// prompted the customer: only its callback can tell, as for a push
		// whose answer was lost.
		r.noAnswer(work, log, msg, req.Payment, latest(promptSince(a), a.UpdatedAt))
	case a.State == events.AttemptNotSent:
		// No push can be waiting for an answer. The deadline counts from
		// the record's last change, so a request the dispatcher is still
		// retrying is not failed.
		r.notDispatched(work, log, msg, req.Payment, &a, rev, latest(requestedAt, a.UpdatedAt), now)
	default:
		// sending or ambiguous (or a state this code does not know, which
		// the dispatcher too reads as "may have prompted"): the last push
		// may have reached the customer, and only its callback can tell.
		// It may have left as late as the record's last change, so the
		// prompt's lifetime counts from then.
		r.noAnswer(work, log, msg, req.Payment, latest(a.FirstSentAt, a.UpdatedAt))
	}
}

// push is what the reconciler knows of a push Daraja accepted.
type push struct {
	payment    events.Payment
	merchantID string
	checkoutID string
	sentAt     time.Time
	// confirming: a held callback awaits this query (handleConfirm), so
	// the query is asked at once and its answer published without waiting
	// for a receipt: the held success's receipt is not to be trusted.
	confirming bool
	// heldFailure: the held callback is a failure that came too soon
	// (events.ConfirmFastFailure). If Daraja says paid, the genuine
	// callback, receipt and all, may still come: it is waited for as for a
	// push without a callback (ReceiptWait).
	heldFailure bool
}

// reconcilePush asks Daraja's STK query about a push, once ReconcileAfter
// has passed since it was sent, and publishes a final answer.
func (r *reconciler) reconcilePush(work context.Context, log *slog.Logger, msg jetstream.Msg, p push) {
	age := r.clock().Sub(p.sentAt)
	if age < r.cfg.ReconcileAfter && !p.confirming {
		later(log, msg, r.cfg.ReconcileAfter-age)
		return
	}
	_ = msg.InProgress()
	ans := r.askPush(work, p, age)
	res, err := ans.res, ans.err
	switch {
	case err == nil && res.ResultCode == "0" && age < r.cfg.ReceiptWait && (!p.confirming || p.heldFailure):
		// Paid, but the query has no receipt: the callback, which has it,
		// may still come (callbacks come up to about two minutes after the
		// push). Published first, this answer would make the callback a
		// duplicate, and the receipt would never reach the record.
		hold := r.cfg.ReceiptWait - age
		log.Info("Daraja's query says paid; waiting for the callback, which carries the receipt", "retry_in", hold.String())
		later(log, msg, hold)
	case err == nil:
		ev := events.Completed{
			Payment:           p.payment,
			ResultCode:        res.ResultCode,
			ResultDesc:        res.ResultDesc,
			Source:            events.SourceQuery,
			MerchantRequestID: firstNonEmpty(p.merchantID, res.MerchantRequestID),
			CheckoutRequestID: p.checkoutID,
			CompletedAt:       r.clock().UTC(),
		}
		// A success learnt this way has no receipt or transaction date:
		// the query does not return them, only the lost callback did. A
		// callback awaiting confirmation gives none either: unconfirmed,
		// its receipt is not recorded.
		what := "no callback: outcome learnt from Daraja's STK query"
		if p.confirming {
			what = "callback confirmed through Daraja's STK query: Daraja's outcome is published, not the callback's"
		}
		log.Info(what, "result_code", ev.ResultCode,
			"result_desc", ev.ResultDesc, "since_push", age.Round(time.Second).String())
		r.finish(work, log, msg, ev)
	case errors.Is(err, daraja.ErrStillProcessing):
		delay := r.retryIn(msg, ans)
		log.Info("Daraja says the transaction is still being processed; asking again later", "retry_in", delay.String(),
			"since_push", age.Round(time.Second).String())
		if age > r.cfg.UnknownDeadline {
			// A prompt lives about a minute and a half: a transaction still
			// open this long is Daraja's anomaly, worth a look.
			log.Warn("transaction still being processed long after its prompt expired", "since_push", age.Round(time.Second).String())
		}
		later(log, msg, delay)
	case errors.Is(err, daraja.ErrUnknownTransaction):
		if age >= r.cfg.UnknownDeadline {
			desc := fmt.Sprintf("Daraja's STK query still answered %q for CheckoutRequestID %s %s after the push",
				"The transaction does not Exist", p.checkoutID, age.Round(time.Second))
			log.Warn("Daraja does not know the transaction: finishing it as failed", "result_code", CodeUnknownTransaction)
			r.finish(work, log, msg, events.Completed{
				Payment:           p.payment,
				ResultCode:        CodeUnknownTransaction,
				ResultDesc:        desc,
				Source:            events.SourceQuery,
				MerchantRequestID: p.merchantID,
				CheckoutRequestID: p.checkoutID,
				CompletedAt:       r.clock().UTC(),
			})
			return
		}
		delay := min(r.retryIn(msg, ans), r.cfg.UnknownDeadline-age)
		log.Info("Daraja does not know the transaction yet; asking again later", "retry_in", delay.String())
		later(log, msg, delay)
	default:
		delay := r.retryIn(msg, ans)
		if daraja.KindOf(err) == daraja.KindRefused {
			// Not this payment's fault (credentials, a malformed id…):
			// finishing it would guess at money; keep asking and shout.
			log.Error("Daraja refused the STK query; asking again later", "error", err, "retry_in", delay.String())
		} else {
			log.Warn("STK query failed; asking again later", "error", err, "retry_in", delay.String())
		}
		later(log, msg, delay)
	}
}

// backoff is the wait before asking Daraja again: QueryInterval doubling
// with each delivery, up to QueryMaxInterval, with some jitter so that the
// instances' queries spread out.
func (r *reconciler) backoff(msg jetstream.Msg) time.Duration {
	n := min(worker.Delivered(msg), 20)
	d := r.cfg.QueryInterval
	for i := uint64(1); i < n && d < r.cfg.QueryMaxInterval; i++ {
		d *= 2
	}
	d = min(d, r.cfg.QueryMaxInterval)
	jitter := time.Duration(rand.Int64N(int64(d)/5 + 1))
	return d - d/10 + jitter
}

// retryIn is the wait before asking Daraja again after ans: the backoff,
// or longer when Daraja asked for it (Retry-After) or when ans is reused for
// longer (any query before then would be given ans again).
func (r *reconciler) retryIn(msg jetstream.Msg, ans answer) time.Duration {
	delay := max(r.backoff(msg), ans.left(r.clock()))
	var de *daraja.Error
	if errors.As(ans.err, &de) {
		delay = max(delay, de.RetryAfter)
	}
	return delay
}
