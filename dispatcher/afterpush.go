package dispatcher

// What follows a push: the request settled by its outcome, the phone's lock
// kept, released or handed on in turn, and the outcome's event.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// afterPush settles the request after its push: the outcome out, and the
// attempt record rec as the push left it.
func (d *dispatcher) afterPush(r *delivery, rec events.Attempt, out outcome) {
	switch out.kind {
	case outcomeAccepted:
		d.pushAccepted(r, rec, out)
	case outcomeRefused, outcomeGaveUp:
		d.pushFinished(r, rec, out)
	case outcomeAmbiguous:
		// Daraja may have prompted the customer: another push could charge
		// them twice. The callback or the reconciler decides the outcome;
		// the phone stays locked until then or until the prompt expired.
		r.log.Warn("push outcome unknown: it may have reached the customer; not retrying, waiting for the callback",
			"error", out.err, "attempts", out.attempts)
		d.ack(r.work, r.log, r.msg)
	case outcomeDeferred:
		// Daraja asked for a long wait (quota, a locked subscriber): spent
		// in JetStream, not in a worker, so the requests behind this one
		// are pushed meanwhile. The record says not_sent and the phone's
		// lock is kept, so the redelivery pushes again, in turn.
		r.log.Info("Daraja asks to wait before the next push: waiting in JetStream, keeping the phone's lock",
			"retry_in", out.wait.Round(time.Millisecond).String(), "attempts", out.attempts, "error", out.err)
		worker.Nak(r.log, r.msg, out.wait)
	case outcomeHeld:
		d.pushHeld(r, rec, out)
	case outcomeCompletedMeanwhile:
		// An earlier call went through after all (a 503 after Daraja had
		// processed it) and its outcome is in: nothing more to push, and no
		// prompt of this payment is open any more.
		r.log.Warn("payment completed while its push was being retried: not pushing again", "attempts", out.attempts, "last_error", out.err)
		d.unlockPhone(r.work, r.log, r.req.Phone, out.lockRev)
		d.ack(r.work, r.log, r.msg)
	case outcomeStopped:
		d.pushStopped(r, rec, out)
	}
}

// pushAccepted publishes stk.dispatched of an accepted push.
func (d *dispatcher) pushAccepted(r *delivery, rec events.Attempt, out outcome) {
	// Daraja's ids go on this line and the failure's, not into a logger
	// built for them (With) on every push: the lines after it name the
	// payment by its tracking id.
	ids := []any{"merchant_request_id", rec.MerchantRequestID, "checkout_request_id", rec.CheckoutRequestID}
	log := r.log
	log.Info("push accepted", append(ids, "attempts", out.attempts, "calls", rec.Calls)...)
	// The lock stays until stk.completed (releasePhones) or its TTL.
	ev := events.Dispatched{
		Payment:             r.req.Payment,
		MerchantRequestID:   out.resp.MerchantRequestID,
		CheckoutRequestID:   out.resp.CheckoutRequestID,
		ResponseDescription: out.resp.ResponseDescription,
		CustomerMessage:     out.resp.CustomerMessage,
	}
	if err := d.publish(r.work, log, r.msg, ev); err != nil {
		// The record says accepted, so a redelivery publishes the event
		// from it and never pushes again.
		log.Error("push accepted but stk.dispatched not yet stored; leaving the request for redelivery, which stores it from the attempt record",
			append(ids, "error", err)...)
		worker.Nak(log, r.msg, d.cfg.RecheckDelay)
		return
	}
	d.ack(r.work, log, r.msg)
}

// pushFinished releases the phone and publishes stk.completed of a push
// refused by Daraja or given up.
func (d *dispatcher) pushFinished(r *delivery, rec events.Attempt, out outcome) {
	if out.kind == outcomeRefused {
		r.log.Warn("push refused by Daraja", "result_code", rec.ErrorCode, "result_desc", rec.ErrorMessage, "attempts", out.attempts)
	} else {
		r.log.Warn("push retries given up", "result_code", rec.ErrorCode, "result_desc", rec.ErrorMessage, "attempts", out.attempts)
	}
	// No prompt is open on the phone: the next payment may go.
	d.unlockPhone(r.work, r.log, r.req.Phone, out.lockRev)
	if err := d.publish(r.work, r.log, r.msg, completedOf(r.req, rec)); err != nil {
		r.log.Error("OUTCOME NOT RECORDED: stk.completed could not be published; leaving the request for redelivery, which stores it from the attempt record",
			"error", err, "result_code", rec.ErrorCode)
		worker.Nak(r.log, r.msg, d.cfg.RecheckDelay)
		return
	}
	d.ack(r.work, r.log, r.msg)
}

// pushHeld retries later a request of which no push was sent in this round.
func (d *dispatcher) pushHeld(r *delivery, rec events.Attempt, out outcome) {
	// No push was sent in this round: the record could not be written
	// (NATS away, another writer on it) or the phone's lock was lost.
	r.log.Warn("push not sent: cannot record the attempt or keep the phone's lock; retrying later",
		"error", out.err, "attempts", out.attempts)
	if d.letGoOfPhone(r.work, r.log, r.id, rec, out.err) {
		d.releaseInTurn(r.work, r.log, r.req.Phone, r.id, r.seq, out.lockRev)
	}
	worker.Nak(r.log, r.msg, d.cfg.RecheckDelay)
}

// pushStopped hands back a request whose push stopped between attempts.
func (d *dispatcher) pushStopped(r *delivery, rec events.Attempt, out outcome) {
	// Stopped between attempts: hand the request back for another
	// dispatcher at once. When an attempt was answered 503 it may
	// have prompted the customer, so the phone stays locked (the next
	// delivery decides, within UncertainRetryWindow or as ambiguous);
	// otherwise none can have, and the phone goes to the next in turn.
	r.log.Info("stopping: request handed back before its next attempt", "attempts", out.attempts, "last_error", out.err)
	if !rec.Uncertain {
		d.releaseInTurn(r.work, r.log, r.req.Phone, r.id, r.seq, out.lockRev)
	}
	handBack(r.log, r.msg)
}

// unlockPhone lets go of the phone's lock held at lockRev.
func (d *dispatcher) unlockPhone(ctx context.Context, log *slog.Logger, phone string, lockRev uint64) {
	if err := d.phones.release(ctx, phone, lockRev); err != nil {
		log.Warn("phone lock not released; it expires by itself", "error", err)
	}
}

// letGoOfPhone decides whether a round that sent nothing releases the
// phone's lock. It does, unless a prompt of this payment may be open (an
// earlier call was uncertain) or another writer of the attempt record is
// pushing it now; if that writer finished the payment instead (the
// reconciler gave it up), nobody will push and the lock is let go, so the
// next payment for the phone need not wait for its TTL.
func (d *dispatcher) letGoOfPhone(ctx context.Context, log *slog.Logger, id string, rec events.Attempt, why error) bool {
	if rec.Uncertain {
		return false
	}
	if !errors.Is(why, errConflict) {
		return true
	}
	cur, _, err := d.attempts.get(ctx, id)
	if err != nil {
		log.Warn("attempt record changed by another writer and cannot be read again: keeping the phone's lock", "error", err)
		return false
	}
	return cur.State == events.AttemptRefused || cur.State == events.AttemptGaveUp
}

// releaseInTurn lets go of the phone's lock held at lockRev by a request
// that sent nothing this round and will be delivered again: it first takes
// its place on the phone's waiting list again, so that requests accepted
// after it do not overtake it while it waits for its redelivery.
func (d *dispatcher) releaseInTurn(ctx context.Context, log *slog.Logger, phone, id string, seq, lockRev uint64) {
	if err := d.phones.join(ctx, phone, waiter{id, seq, time.Now().UTC()}, d.cfg.queueGone); err != nil {
		log.Warn("could not keep the request's place on the phone's waiting list", "error", err)
	}
	d.unlockPhone(ctx, log, phone, lockRev)
}

// completedOf is the stk.completed of a refused or given-up push, built
// from its record only, so that a redelivery publishes the same event.
func completedOf(req events.Requested, rec events.Attempt) events.Completed {
	desc := rec.ErrorMessage
	if rec.State == events.AttemptGaveUp && rec.ErrorCode != CodePhoneBusy {
		desc = fmt.Sprintf("Gave up after %d attempts: %s", rec.Calls, rec.ErrorMessage)
	}
	return events.Completed{
		Payment:     req.Payment,
		ResultCode:  rec.ErrorCode,
		ResultDesc:  desc,
		Source:      events.SourceDispatcher,
		CompletedAt: rec.UpdatedAt,
	}
}

// restore makes sure the event of an outcome recorded by an earlier
// delivery is in the stream: that delivery may have stopped between
// recording and publishing. The event is rebuilt from the record, with the
// same Nats-Msg-Id, and published only if the stream lacks it (the
// duplicate window alone would not cover a late redelivery).
func (d *dispatcher) restore(work context.Context, log *slog.Logger, msg jetstream.Msg, req events.Requested, rec events.Attempt) error {
	var ev events.Event = completedOf(req, rec)
	if rec.State == events.AttemptAccepted {
		ev = events.Dispatched{
			Payment:           req.Payment,
			MerchantRequestID: rec.MerchantRequestID,
			CheckoutRequestID: rec.CheckoutRequestID,
		}
	}
	subject := events.Subject(ev.Type(), req.TrackingID)
	ctx, cancel := context.WithTimeout(work, kvTimeout)
	_, err := events.LastMsg(ctx, d.js, d.stream, subject)
	cancel()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		log.Warn("recorded outcome missing from the stream: publishing it from the attempt record", "event", ev.Type())
		return d.publish(work, log, msg, ev)
	default:
		return fmt.Errorf("look up %s: %w", subject, err)
	}
}
