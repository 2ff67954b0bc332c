package reconciler

// Finishing a payment the reconciler decides itself: no answer, not
// dispatched, or the outcome its attempt record holds.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher"
	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
)

// noAnswer finishes as Unknown (CodeNoAnswer) a push whose answer was lost,
// once the prompt's lifetime since sentAt has passed without a callback
// applied.
//
// A callback kept for the payment (stkcb.received.<id>) but not applied yet
// — callback-ingest died between keeping and publishing it, or could not
// read the stream — is waited for: callback-ingest's applier publishes its
// outcome shortly, and a paid payment must not read Unknown for want of a
// few seconds. The wait is bounded by RequestDeadline after the callback was
// kept; past it the payment is finished as Unknown all the same, and the
// callback, applied later, follows as stk.late_result.
func (r *reconciler) noAnswer(work context.Context, log *slog.Logger, msg jetstream.Msg, p events.Payment, sentAt time.Time) {
	deadline := sentAt.Add(r.cfg.PromptLifetime)
	now := r.clock()
	if now.Before(deadline) {
		later(log, msg, min(deadline.Sub(now), r.cfg.ReconcileAfter))
		return
	}
	keptAt, err := r.keptCallback(work, p.TrackingID)
	if err != nil {
		log.Warn("cannot tell whether a callback is kept for the payment; checking later", "error", err)
		later(log, msg, retryDelay)
		return
	}
	if !keptAt.IsZero() {
		if wait := keptAt.Add(r.cfg.RequestDeadline).Sub(now); wait > 0 {
			log.Warn("a callback is kept for the payment but not applied yet: waiting for callback-ingest's applier",
				"kept_at", keptAt, "wait_at_most", wait.Round(time.Millisecond).String())
			later(log, msg, min(wait, r.cfg.ReconcileAfter))
			return
		}
		log.Error("a callback kept for the payment was not applied within the request deadline: finishing it as Unknown; the callback follows as stk.late_result once applied",
			"kept_at", keptAt, "request_deadline", r.cfg.RequestDeadline.String())
	}
	log.Warn("push answer lost and no callback within the prompt's lifetime: finishing it as Unknown", "result_code", CodeNoAnswer)
	r.finish(work, log, msg, events.Completed{
		Payment:    p,
		ResultCode: CodeNoAnswer,
		ResultDesc: fmt.Sprintf("The push may have reached the customer but Daraja's answer was lost and no callback came within the prompt's lifetime (%s)",
			r.cfg.PromptLifetime),
		Source:      events.SourceDispatcher,
		CompletedAt: now.UTC(),
	})
}

// notDispatched finishes as Failed a request with no push in flight once
// RequestDeadline has passed since since. Before publishing it marks the
// attempt record given up, with a compare-and-set on its revision, so that a
// dispatcher reading the record before a push sees the request is finished,
// and so that a dispatcher that moved meanwhile wins: the request is then
// looked at again.
func (r *reconciler) notDispatched(work context.Context, log *slog.Logger, msg jetstream.Msg, p events.Payment, a *events.Attempt, rev uint64, since, now time.Time) {
	deadline := since.Add(r.cfg.RequestDeadline)
	if now.Before(deadline) {
		later(log, msg, min(deadline.Sub(now), r.cfg.ReconcileAfter))
		return
	}
	// A request waiting in its phone's queue (another payment's prompt is
	// open on the phone, or was until moments ago) is waiting legitimately:
	// the dispatcher pushes it when the phone is free, or gives it up itself.
	// (Its own lock, once ReconcileAfter old, is no such wait: mostly it
	// was left by a dispatcher that stopped. A dispatcher may still be
	// about to push with it, after a deferral or a failed lookup: the
	// record's compare-and-set below decides between the two. The loser
	// looks again, so the payment is failed or pushed, never both.)
	if busy, err := r.phoneBusy(work, p.Phone, p.TrackingID, now); err != nil {
		log.Warn("cannot read the phone's lock; checking later", "error", err)
		later(log, msg, retryDelay)
		return
	} else if busy {
		log.Info("past its deadline but waiting for its phone: checking later")
		later(log, msg, r.cfg.ReconcileAfter)
		return
	}
	desc := fmt.Sprintf("No CheckoutRequestID after %s: Daraja accepted no push for this request", r.cfg.RequestDeadline)
	rec := events.Attempt{TrackingID: p.TrackingID}
	if a != nil {
		rec = *a
		if a.ErrorMessage != "" {
			desc += " (last error: " + a.ErrorMessage + ")"
		}
	}
	rec.State = events.AttemptGaveUp
	rec.ErrorCode, rec.ErrorMessage = CodeNotDispatched, desc
	rec.UpdatedAt = now.UTC()
	body, err := json.Marshal(rec)
	if err != nil {
		log.Error("encode attempt record", "error", err)
		later(log, msg, retryDelay)
		return
	}
	ctx, cancel := context.WithTimeout(work, lookupTimeout)
	if a == nil {
		_, err = r.kv.Create(ctx, p.TrackingID, body)
	} else {
		_, err = r.kv.Update(ctx, p.TrackingID, body, rev)
	}
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		log.Info("the dispatcher changed the attempt record meanwhile: looking again")
		later(log, msg, 0)
		return
	case err != nil:
		log.Warn("cannot mark the attempt given up; trying later", "error", err)
		later(log, msg, retryDelay)
		return
	}
	log.Warn("no CheckoutRequestID by the request's deadline: finishing it as failed", "result_code", CodeNotDispatched)
	r.finish(work, log, msg, events.Completed{
		Payment:     p,
		ResultCode:  CodeNotDispatched,
		ResultDesc:  desc,
		Source:      events.SourceDispatcher,
		CompletedAt: now.UTC(),
	})
}

// recordedOutcome publishes the outcome a refused or given-up attempt
// records, should the dispatcher (or the reconciler itself) have recorded it
// without publishing it: ReconcileAfter after the record's last change.
func (r *reconciler) recordedOutcome(work context.Context, log *slog.Logger, msg jetstream.Msg, p events.Payment, a events.Attempt, now time.Time) {
	due := a.UpdatedAt.Add(r.cfg.ReconcileAfter)
	if now.Before(due) {
		later(log, msg, due.Sub(now))
		return
	}
	code, desc := a.ErrorCode, a.ErrorMessage
	if status, label := events.Outcome(code); status != events.StatusFinal || label != events.LabelFailed {
		// An error code that is empty or reads as another outcome must not
		// turn a push that never went out into "Success".
		code = daraja.CodeUnreachable
	}
	switch {
	case desc == "" && a.State == events.AttemptRefused:
		desc = "Daraja refused the push"
	case desc == "":
		desc = "The dispatcher gave up the push"
	case a.State == events.AttemptGaveUp && a.ErrorCode != dispatcher.CodePhoneBusy && a.ErrorCode != CodeNotDispatched:
		// Worded as the dispatcher words it when it publishes the same
		// outcome from the record, so either event reads the same.
		desc = fmt.Sprintf("Gave up after %d attempts: %s", a.Calls, desc)
	}
	log.Warn("attempt finished without stk.completed: publishing its recorded outcome", "result_code", code)
	r.finish(work, log, msg, events.Completed{
		Payment:           p,
		ResultCode:        code,
		ResultDesc:        desc,
		Source:            events.SourceDispatcher,
		MerchantRequestID: a.MerchantRequestID,
		// The record's time, as the dispatcher's own event from the record.
		CompletedAt: a.UpdatedAt,
	})
}

// finish publishes ev and acks msg, or naks it to try again.
func (r *reconciler) finish(work context.Context, log *slog.Logger, msg jetstream.Msg, ev events.Completed) {
	dup, err := r.publish(work, ev)
	if err != nil {
		log.Error("OUTCOME NOT RECORDED: stk.completed could not be published; trying again", "error", err,
			"result_code", ev.ResultCode)
		later(log, msg, retryDelay)
		return
	}
	if dup {
		log.Info("an outcome was already recorded: the first one stands", "result_code", ev.ResultCode)
	} else {
		_, label := events.Outcome(ev.ResultCode)
		log.Info("payment completed", "source", ev.Source, "result_code", ev.ResultCode, "status_label", label)
	}
	ack(work, log, msg)
}
