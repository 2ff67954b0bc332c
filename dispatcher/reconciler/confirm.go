package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
// from whichever source. A success held because another payment claimed its
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
	case err == nil && events.DecidedByStkgate(c.ResultCode) && c.Source != events.SourceQuery:
		// Daraja was never asked (a push whose answer was lost has no
		// CheckoutRequestID to query) and stkgate finished the payment
		// itself, Unknown say. (An outcome from the query, even one with
		// a code of stkgate's, answered the callback: it is done with.) The callback is now a late result, as if
		// it had come after that outcome: kept again on
		// stkcb.received.<id>, callback-ingest's applier publishes it as
		// stk.late_result, beside the outcome, which stays.
		if err := r.keepAsLate(work, msg); err != nil {
			log.Warn("cannot keep the unconfirmed callback as a late result; trying later", "error", err)
			later(log, msg, retryDelay)
			return
		}
		log.Warn("a callback awaiting confirmation could not be confirmed before the payment ended with a code of stkgate's: handed to callback-ingest as a late result",
			"result_code", c.ResultCode, "source", c.Source)
		ack(work, log, msg)
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
	p := push{payment: req.Payment, confirming: true, heldFailure: reason == events.ConfirmFastFailure}
	d, at, err := lastEvent[events.Dispatched](work, r.stream, events.TypeDispatched, id)
	switch {
	case err == nil:
		p.merchantID, p.checkoutID, p.sentAt = d.MerchantRequestID, d.CheckoutRequestID, at
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// The callback came before stk.dispatched: the attempt record
		// may already hold Daraja's answer.
		a, _, found, aerr := r.attempt(work, id)
		if aerr != nil {
			log.Warn("cannot read the attempt record; checking later", "error", aerr)
			later(log, msg, retryDelay)
			return
		}
		if !found || a.CheckoutRequestID == "" {
			// Not yet answered, or the answer was lost: then the
			// payment fails after the prompt's lifetime (handleRequested)
			// and the next look above reports it.
			log.Info("no CheckoutRequestID to query yet; checking later")
			later(log, msg, r.backoff(msg))
			return
		}
		p.merchantID, p.checkoutID, p.sentAt = a.MerchantRequestID, a.CheckoutRequestID, latest(a.FirstSentAt, a.UpdatedAt)
	default:
		log.Warn("cannot read stk.dispatched; checking later", "error", err)
		later(log, msg, retryDelay)
		return
	}
	if p.checkoutID == "" {
		// Nothing to query: the dispatched handler waits for such a push.
		log.Error("stk.dispatched without a CheckoutRequestID: the callback cannot be confirmed; left to the push's own reconciliation")
		ack(work, log, msg)
		return
	}
	r.reconcilePush(work, log.With("checkout_request_id", p.checkoutID), msg, p)
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
