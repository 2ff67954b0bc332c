package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
)

// confirmConsumer makes sure STK_CALLBACKS exists (callback-ingest may not
// have started yet), returns it, and creates the consumer of the callbacks
// awaiting confirmation.
func (r *reconciler) confirmConsumer(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, jetstream.Consumer, error) {
	s, err := events.EnsureCallbackStream(ctx, js, r.cfg.StreamReplicas)
	if err != nil {
		return nil, nil, err
	}
	c, err := js.CreateOrUpdateConsumer(ctx, events.CallbackStreamName, events.ReconcilerConfirmConsumer())
	if err != nil {
		return nil, nil, fmt.Errorf("create consumer %s: %w", events.ConsumerReconcilerConfirm, err)
	}
	return s, c, nil
}

// handleConfirm follows one callback callback-ingest did not trust as it
// stands (kept on stkcb.confirm.<id>): a success whose amount or phone
// disagreed with the request or could not be compared with it, every
// success under CALLBACK_CONFIRM=always, or a failure that came sooner after
// its push than a customer can answer (events.ConfirmFastFailure). It asks
// Daraja's STK query about the payment's push at once, not RECONCILE_AFTER
// after it, and publishes Daraja's answer with source "query": success or
// not, nothing of the callback (its receipt, its amount, its failure)
// becomes the recorded outcome. Done once the payment has an stk.completed,
// from whichever source, but one stkgate decided itself that was not the
// query's answer to this callback (from a source other than the query, or
// stored before the callback was kept): then the answer is the payment's
// late result (confirmLate). A success held because another payment claimed its
// receipt first (events.ConfirmReceiptTaken) also has that holder
// questioned; a copy kept for that (events.ConfirmReceiptHolder) is not this
// payment's callback and goes to questionHolder (receipt.go).
func (r *reconciler) handleConfirm(work context.Context, log *slog.Logger, msg jetstream.Msg) {
	id := events.TrackingIDOf(msg.Subject())
	reason := msg.Headers().Get(events.CallbackHeaderReason)
	log = log.With("callback_id", msg.Headers().Get(events.CallbackHeaderID), "confirm_reason", reason)
	switch reason {
	case events.ConfirmReceiptHolder:
		// Not this payment's callback: another's, naming the receipt
		// this payment holds (receipt.go).
		r.questionHolder(work, log, msg)
		return
	case events.ConfirmReceiptTaken:
		if err := r.askAboutHolder(work, log, msg); err != nil {
			log.Warn("cannot hand the receipt's holder to its own STK query; trying later", "error", err)
			later(log, msg, retryDelay)
			return
		}
	}
	switch c, _, err := lastEvent[events.Completed](work, r.stream, events.TypeCompleted, id); {
	case err == nil && events.DecidedByStkgate(c.ResultCode):
		// stkgate finished the payment itself (Unknown, or Failed as
		// unknown to Daraja), so Daraja's word on the held callback is a
		// late result: ask it again, whenever the callback was kept. An
		// outcome of the query's own (stkgate.unknown_transaction) may
		// have been asked before the callback existed, and the stores'
		// clocks cannot tell: dropping the callback could hide a paid
		// payment, asking again costs a query (shared with its other
		// copies), and a "does not exist" past the deadline is acked with
		// no late result.
		r.confirmLate(work, log, msg, c)
		return
	case err == nil && c.ResultCode != "0" && c.Source != events.SourceQuery && reason != events.ConfirmFastFailure:
		// Daraja's own outcome (a callback's) says otherwise: only an
		// operator can tell.
		log.Error("a success callback awaiting confirmation was never confirmed: the payment finished otherwise; its callback is kept on stkcb.confirm",
			"result_code", c.ResultCode, "source", c.Source)
		ack(work, log, msg)
		return
	case err == nil:
		log.Info("the payment has its outcome: nothing left to confirm", "result_code", c.ResultCode, "source", c.Source)
		ack(work, log, msg)
		return
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		log.Warn("cannot tell whether the payment is complete; checking later", "error", err)
		later(log, msg, retryDelay)
		return
	}
	req, _, err := lastEvent[events.Requested](work, r.stream, events.TypeRequested, id)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// callback-ingest holds a callback only for a payment it found.
		log.Error("callback awaiting confirmation for a payment with no stk.requested: dropped")
		ack(work, log, msg)
		return
	case err != nil:
		log.Warn("cannot read stk.requested; checking later", "error", err)
		later(log, msg, retryDelay)
		return
	}
	p, dispatched, err := r.heldPush(work, id)
	switch {
	case err != nil:
		log.Warn("cannot read the payment's push; checking later", "error", err)
		later(log, msg, retryDelay)
		return
	case p.checkoutID == "" && dispatched:
		// Nothing to query: the dispatched handler waits for such a push.
		log.Error("stk.dispatched without a CheckoutRequestID: the callback cannot be confirmed; left to the push's own reconciliation")
		ack(work, log, msg)
		return
	case p.checkoutID == "":
		// Not yet answered, or the answer was lost: then the payment
		// fails after the prompt's lifetime (handleRequested) and the
		// next look above reports it.
		log.Info("no CheckoutRequestID to query yet; checking later")
		later(log, msg, r.backoff(msg))
		return
	}
	p.payment, p.confirming, p.heldFailure = req.Payment, true, reason == events.ConfirmFastFailure
	r.reconcilePush(work, log.With("checkout_request_id", p.checkoutID), msg, p)
}

// heldPush is the push a held callback of id is confirmed by: the one
// stk.dispatched names (dispatched), or, when the callback came before it,
// the one the attempt record holds Daraja's answer to. An empty checkoutID
// means there is nothing to query (yet).
func (r *reconciler) heldPush(work context.Context, id string) (p push, dispatched bool, err error) {
	d, at, err := lastEvent[events.Dispatched](work, r.stream, events.TypeDispatched, id)
	switch {
	case err == nil:
		return push{payment: d.Payment, merchantID: d.MerchantRequestID, checkoutID: d.CheckoutRequestID, sentAt: at}, true, nil
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return push{}, false, fmt.Errorf("read stk.dispatched: %w", err)
	}
	a, _, found, err := r.attempt(work, id)
	switch {
	case err != nil:
		return push{}, false, err
	case !found:
		return push{}, false, nil
	}
	return push{merchantID: a.MerchantRequestID, checkoutID: a.CheckoutRequestID, sentAt: latest(a.FirstSentAt, a.UpdatedAt)}, false, nil
}

// confirmLate settles a held callback of a payment stkgate finished itself
// (final: events.DecidedByStkgate, not the query's answer to the callback). The outcome stays;
// the callback is Daraja's late word, and a late Success tells the merchant
// the payment was paid. So it is confirmed as a held callback of an open
// payment is: Daraja's STK query about the push answers it, and the answer
// is published as the payment's stk.late_result (source "query"), never
// anything of the callback (its receipt, its amount). Without a
// CheckoutRequestID to query (the push's answer was lost) the callback is
// handed back to callback-ingest as a late result (keepAsLate), which
// publishes a failure and keeps a success that fails its checks for an
// operator (events.UnmatchedLateUnconfirmed).
func (r *reconciler) confirmLate(work context.Context, log *slog.Logger, msg jetstream.Msg, final events.Completed) {
	p, _, err := r.heldPush(work, final.TrackingID)
	switch {
	case err != nil:
		log.Warn("cannot read the payment's push; checking later", "error", err)
		later(log, msg, retryDelay)
		return
	case p.checkoutID == "":
		if err := r.keepAsLate(work, msg); err != nil {
			log.Warn("cannot keep the unconfirmed callback as a late result; trying later", "error", err)
			later(log, msg, retryDelay)
			return
		}
		log.Warn("a held callback of a payment that ended with a code of stkgate's, without a CheckoutRequestID to query: handed to callback-ingest as a late result",
			"result_code", final.ResultCode, "source", final.Source)
		ack(work, log, msg)
		return
	}
	log = log.With("checkout_request_id", p.checkoutID)
	_ = msg.InProgress()
	age := r.clock().Sub(p.sentAt)
	ans := r.askPush(work, p, age)
	res, err := ans.res, ans.err
	switch {
	case err == nil:
		r.publishLate(work, log, msg, events.LateResult{
			Payment:           final.Payment,
			FollowsCode:       final.ResultCode,
			ResultCode:        res.ResultCode,
			ResultDesc:        res.ResultDesc,
			Source:            events.SourceQuery,
			MerchantRequestID: firstNonEmpty(p.merchantID, res.MerchantRequestID),
			CheckoutRequestID: p.checkoutID,
			LearntAt:          r.clock().UTC(),
		})
	case errors.Is(err, daraja.ErrUnknownTransaction) && age >= r.cfg.UnknownDeadline:
		log.Error("Daraja's STK query does not know the push of a held late callback: no late result; the callback stays on stkcb.confirm for an operator",
			"final_result_code", final.ResultCode)
		ack(work, log, msg)
	default:
		delay := r.retryIn(msg, ans)
		log.Warn("STK query about a held late callback got no final answer; asking again later", "error", err, "retry_in", delay.String())
		later(log, msg, delay)
	}
}

// askPush is Daraja's STK query answer about p, sent age ago. The client
// bounds the round trip (daraja.Config.Timeout). The answer may be one
// another asker got moments ago (queries.go); but an answer asked before the
// unknown deadline cannot say Daraja still did not know the push after it:
// past the deadline, only a later one is taken.
func (r *reconciler) askPush(work context.Context, p push, age time.Duration) answer {
	var notBefore time.Time
	if age >= r.cfg.UnknownDeadline {
		notBefore = p.sentAt.Add(r.cfg.UnknownDeadline)
	}
	return r.queries.ask(work, p.checkoutID, notBefore)
}

// publishLate publishes ev, Daraja's answer about a held late callback, as
// the payment's stk.late_result, unless a stored one stands before it: any
// but a failure that a success replaces (events.LateReplaces), as
// callback-ingest decides for a late callback, and in one step with the
// read (events.PublishLate), so a late result callback-ingest stores
// meanwhile is decided against, not overtaken.
func (r *reconciler) publishLate(work context.Context, log *slog.Logger, msg jetstream.Msg, ev events.LateResult) {
	ctx, cancel := context.WithTimeout(work, lookupTimeout)
	defer cancel()
	res, err := r.pub.PublishLate(ctx, r.stream, ev)
	switch {
	case errors.Is(err, events.ErrMalformed):
		log.Error("stored stk.late_result is unreadable; Daraja's answer about the held callback is not published",
			"error", err, "result_code", ev.ResultCode)
		ack(work, log, msg)
		return
	case err != nil:
		log.Error("LATE RESULT NOT RECORDED: stk.late_result could not be published; trying again", "error", err,
			"result_code", ev.ResultCode)
		later(log, msg, retryDelay)
		return
	case res.Ack == nil:
		log.Info("the payment's stored late result stands: Daraja's answer about the held callback is not published",
			"stored_late_result_code", res.Stored.ResultCode, "stored_late_source", res.Stored.Source, "result_code", ev.ResultCode)
		ack(work, log, msg)
		return
	}
	_, label := events.Outcome(ev.ResultCode)
	log.Warn("held callback of a payment stkgate finished itself: Daraja's STK query answered it, published as stk.late_result; the outcome stays",
		"final_result_code", ev.FollowsCode, "result_code", ev.ResultCode, "late_status_label", label)
	ack(work, log, msg)
}

// keepAsLate copies a callback held for confirmation to
// stkcb.received.<id> with the reason events.CallbackReasonLate, body and
// headers as kept. Its Nats-Msg-Id is derived from the held copy's stream
// sequence, so a second try within the duplicate window is stored once.
func (r *reconciler) keepAsLate(work context.Context, msg jetstream.Msg) error {
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("metadata of the held callback: %w", err)
	}
	id := events.TrackingIDOf(msg.Subject())
	out := events.KeepAgain(msg, events.CallbackSubjectReceived(id), events.CallbackReasonLate)
	ctx, cancel := context.WithTimeout(work, lookupTimeout)
	defer cancel()
	_, err = r.js.PublishMsg(ctx, out,
		jetstream.WithMsgID(fmt.Sprintf("reconciler-confirm:%d:late", meta.Sequence.Stream)),
		jetstream.WithExpectStream(events.CallbackStreamName))
	if err != nil {
		return fmt.Errorf("keep on %s: %w", out.Subject, err)
	}
	return nil
}

// lastEvent returns the newest event of type typ for id and when JetStream
// stored it; jetstream.ErrMsgNotFound when there is none.
func lastEvent[E events.Event](ctx context.Context, s jetstream.Stream, typ, id string) (E, time.Time, error) {
	var zero E
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	subject := events.Subject(typ, id)
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return zero, time.Time{}, err
	}
	env, ev, err := events.Decode(m.Data)
	if err != nil {
		return zero, time.Time{}, fmt.Errorf("decode %s: %w", subject, err)
	}
	e, ok := ev.(E)
	if !ok || env.Subject != id {
		return zero, time.Time{}, fmt.Errorf("%w: %s holds %s for %q", events.ErrMalformed, subject, env.Type, env.Subject)
	}
	return e, m.Time, nil
}
