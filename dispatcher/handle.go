package dispatcher

// Handling one stk.requested: the checks before a push, the evidence of
// earlier deliveries, the phone's turn, and what follows the push.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// handle dispatches one stk.requested. stop ends on shutdown: no new attempt
// starts after it. work ends only after the shutdown timeout: an attempt in
// flight and the recording of an outcome get that long to finish.
//
// The attempt record (STK_ATTEMPTS) is read first and written before every
// push, so that whatever delivery of the request comes next, and whichever
// dispatcher instance gets it, knows whether a push may already have
// reached the customer.
func (d *dispatcher) handle(stop, work context.Context, msg jetstream.Msg) {
	id := events.TrackingIDOf(msg.Subject())
	log := d.log.With("tracking_id", id)

	_, ev, err := events.Decode(msg.Data())
	if err != nil {
		d.terminate(log, msg, err.Error())
		return
	}
	req, ok := ev.(events.Requested)
	if !ok {
		d.terminate(log, msg, fmt.Sprintf("%s on a %s subject", ev.Type(), events.TypeRequested))
		return
	}
	if req.TrackingID != id {
		d.terminate(log, msg, fmt.Sprintf("tracking_id %q does not match the subject", req.TrackingID))
		return
	}
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		// callback-ingest takes callbacks only for canonical UUIDs: a push
		// for any other id could be paid and never completed.
		d.terminate(log, msg, "tracking id is not a canonical UUID")
		return
	}
	log = log.With("phone", events.MaskPhone(req.Phone), "amount", req.Amount)

	if stop.Err() != nil {
		// Fetched as the dispatcher stopped: hand it back untouched.
		if err := worker.HandBack(msg); err != nil {
			log.Warn("nak on stop", "error", err)
		}
		return
	}

	delivered, seq := uint64(1), uint64(0)
	if meta, err := msg.Metadata(); err == nil {
		delivered, seq = meta.NumDelivered, meta.Sequence.Stream
	}

	// Past half its deliveries a request goes whatever its client's share,
	// so that waiting for it never costs a payment (the phone's waits need
	// the other half).
	done, wait, why := d.shares.take(ask{client: req.Client, phone: req.Phone, id: id, seq: seq}, time.Now(), delivered >= uint64(d.cfg.maxDeliver/2))
	if done == nil {
		line := "client at its share of the workers: waiting for the other clients' requests"
		if why == behindPhone {
			line = "an earlier request for the phone waits for its client's share: waiting behind it"
		}
		log.Debug(line, "client", req.Client, "retry_in", wait.Round(time.Millisecond).String(), "delivered", delivered)
		worker.Nak(log, msg, wait)
		return
	}
	defer done()

	rec, rev, err := d.attempts.get(work, id)
	if err != nil {
		log.Error("cannot read the attempt record: not pushing; retrying later", "error", err)
		worker.Nak(log, msg, d.cfg.RecheckDelay)
		return
	}
	switch rec.State {
	case "", events.AttemptNotSent:
		// Nothing can have reached the customer: push (again).
		if rev != 0 {
			log.Info("request redelivered after attempts that did not reach Daraja: pushing again",
				"delivered", delivered, "calls", rec.Calls)
		}
	case events.AttemptAccepted, events.AttemptRefused, events.AttemptGaveUp:
		log.Info("request redelivered after its outcome was recorded: not pushing again; making sure its event is stored",
			"state", rec.State, "delivered", delivered)
		if err := d.restore(work, log, msg, req, rec); err != nil {
			log.Error("event of a recorded outcome not stored; leaving the request for redelivery", "error", err, "state", rec.State)
			worker.Nak(log, msg, d.cfg.RecheckDelay)
			return
		}
		d.leaveQueue(work, log, req.Phone, id)
		d.ack(work, log, msg)
		return
	default:
		// sending, ambiguous (or a state this version does not know): a
		// push may have prompted the customer; another could charge them
		// twice. The callback or the reconciler settles it.
		log.Warn("an earlier delivery may have prompted the customer: not pushing again; the callback or the reconciler settles it",
			"state", rec.State, "calls", rec.Calls, "delivered", delivered)
		d.leaveQueue(work, log, req.Phone, id)
		d.ack(work, log, msg)
		return
	}

	lockRev, holder, err := d.phones.acquire(work, req.Phone, id, seq, time.Now().UTC(), d.queueTimes())
	if err != nil {
		log.Error("cannot take the phone's lock: not pushing; retrying later", "error", err)
		worker.Nak(log, msg, d.cfg.RecheckDelay)
		return
	}
	if holder != "" {
		if delivered >= uint64(d.cfg.maxDeliver) {
			// The last delivery JetStream will make: finish the payment
			// rather than let it run out unanswered.
			log.Warn("phone busy for too long: giving up", "holder_tracking_id", holder, "delivered", delivered)
			if err := d.phones.leave(work, req.Phone, id, time.Now().UTC(), d.cfg.queueGone); err != nil {
				log.Warn("not taken off the phone's waiting list; the entry goes stale", "error", err)
			}
			rec.TrackingID = id
			rec.State = events.AttemptGaveUp
			rec.ErrorCode = CodePhoneBusy
			rec.ErrorMessage = "another payment's prompt kept the phone busy"
			if rec.Uncertain {
				// An earlier push answered 503 may have prompted the
				// customer: not a failure; the callback or the reconciler
				// decides.
				rec.State = events.AttemptAmbiguous
			}
			rec.UpdatedAt = time.Now().UTC()
			if _, err := d.attempts.put(work, rec, rev); err != nil {
				log.Error("cannot record giving up; retrying later", "error", err)
				worker.Nak(log, msg, d.cfg.RecheckDelay)
				return
			}
			if rec.State == events.AttemptAmbiguous {
				d.ack(work, log, msg)
				return
			}
			if err := d.publish(work, log, msg, completedOf(req, rec)); err != nil {
				log.Error("OUTCOME NOT RECORDED: stk.completed could not be published; leaving the request for redelivery", "error", err)
				return
			}
			d.ack(work, log, msg)
			return
		}
		// Another payment's prompt may be open on this phone, or an
		// earlier request waits for it: wait in JetStream (durably), on the
		// phone's waiting list, and look again later.
		log.Debug("phone busy with another payment's prompt: waiting", "before_tracking_id", holder, "delivered", delivered)
		worker.Nak(log, msg, d.cfg.PhoneWait)
		return
	}

	// The phone is ours. Before the push: a request whose record is gone
	// (STK_ATTEMPTS purged or lost, the consumer recreated) may have been
	// pushed, or finished, long ago; a request whose earlier pushes did
	// not reach Daraja may have been finished meanwhile.
	switch found, err := d.evidence(work, id, rev == 0); {
	case err != nil:
		log.Error("cannot tell whether the payment was pushed or finished before: not pushing; retrying later", "error", err)
		worker.Nak(log, msg, d.cfg.RecheckDelay)
		return
	case found.completed:
		log.Warn("request redelivered after its outcome was stored: not pushing", "attempt_state", rec.State, "delivered", delivered)
		if err := d.phones.release(work, req.Phone, lockRev); err != nil {
			log.Warn("phone lock not released; it expires by itself", "error", err)
		}
		d.ack(work, log, msg)
		return
	case found.dispatched:
		// Daraja accepted a push for it: its prompt may be open, so the
		// lock stays until the completion (or its TTL).
		log.Warn("request redelivered without its attempt record, but Daraja accepted its push: not pushing again", "delivered", delivered)
		d.ack(work, log, msg)
		return
	case found.pushed != nil:
		// A push left and its record is gone: its fate is unknown. The
		// record is written again as ambiguous, so the reconciler waits for
		// its callback from the time it left; the lock stays.
		a := *found.pushed
		a.TrackingID, a.State, a.UpdatedAt = id, events.AttemptAmbiguous, time.Now().UTC()
		a.ErrorCode, a.ErrorMessage = CodeRecordLost, "the attempt record was lost after a push was sent; its outcome is unknown"
		if _, err := d.attempts.put(work, a, 0); err != nil {
			log.Error("push log shows a push whose record is gone; record not written again, retrying later", "error", err)
			worker.Nak(log, msg, d.cfg.RecheckDelay)
			return
		}
		log.Warn("request redelivered without its attempt record, but a push left for it: not pushing again; the callback or the reconciler settles it",
			"calls", a.Calls, "sent_at", a.SentAt, "delivered", delivered)
		d.ack(work, log, msg)
		return
	}

	out := d.push(stop, work, log, msg, req, &rec, rev, lockRev)
	switch out.kind {
	case outcomeAccepted:
		log = log.With("merchant_request_id", rec.MerchantRequestID, "checkout_request_id", rec.CheckoutRequestID)
		log.Info("push accepted", "attempts", out.attempts, "calls", rec.Calls)
		// The lock stays until stk.completed (releasePhones) or its TTL.
		ev := events.Dispatched{
			Payment:             req.Payment,
			MerchantRequestID:   out.resp.MerchantRequestID,
			CheckoutRequestID:   out.resp.CheckoutRequestID,
			ResponseDescription: out.resp.ResponseDescription,
			CustomerMessage:     out.resp.CustomerMessage,
		}
		if err := d.publish(work, log, msg, ev); err != nil {
			// The record says accepted, so a redelivery publishes the event
			// from it and never pushes again.
			log.Error("push accepted but stk.dispatched not yet stored; leaving the request for redelivery, which stores it from the attempt record",
				"error", err)
			worker.Nak(log, msg, d.cfg.RecheckDelay)
			return
		}
		d.ack(work, log, msg)

	case outcomeRefused, outcomeGaveUp:
		if out.kind == outcomeRefused {
			log.Warn("push refused by Daraja", "result_code", rec.ErrorCode, "result_desc", rec.ErrorMessage, "attempts", out.attempts)
		} else {
			log.Warn("push retries given up", "result_code", rec.ErrorCode, "result_desc", rec.ErrorMessage, "attempts", out.attempts)
		}
		// No prompt is open on the phone: the next payment may go.
		if err := d.phones.release(work, req.Phone, out.lockRev); err != nil {
			log.Warn("phone lock not released; it expires by itself", "error", err)
		}
		if err := d.publish(work, log, msg, completedOf(req, rec)); err != nil {
			log.Error("OUTCOME NOT RECORDED: stk.completed could not be published; leaving the request for redelivery, which stores it from the attempt record",
				"error", err, "result_code", rec.ErrorCode)
			worker.Nak(log, msg, d.cfg.RecheckDelay)
			return
		}
		d.ack(work, log, msg)

	case outcomeAmbiguous:
		// Daraja may have prompted the customer: another push could charge
		// them twice. The callback or the reconciler decides the outcome;
		// the phone stays locked until then or until the prompt expired.
		log.Warn("push outcome unknown: it may have reached the customer; not retrying, waiting for the callback",
			"error", out.err, "attempts", out.attempts)
		d.ack(work, log, msg)

	case outcomeDeferred:
		// Daraja asked for a long wait (quota, a locked subscriber): spent
		// in JetStream, not in a worker, so the requests behind this one
		// are pushed meanwhile. The record says not_sent and the phone's
		// lock is kept, so the redelivery pushes again, in turn.
		log.Info("Daraja asks to wait before the next push: waiting in JetStream, keeping the phone's lock",
			"retry_in", out.wait.Round(time.Millisecond).String(), "attempts", out.attempts, "error", out.err)
		worker.Nak(log, msg, out.wait)

	case outcomeHeld:
		// No push was sent in this round: the record could not be written
		// (NATS away, another writer on it) or the phone's lock was lost.
		log.Warn("push not sent: cannot record the attempt or keep the phone's lock; retrying later",
			"error", out.err, "attempts", out.attempts)
		if d.letGoOfPhone(work, log, id, rec, out.err) {
			d.releaseInTurn(work, log, req.Phone, id, seq, out.lockRev)
		}
		worker.Nak(log, msg, d.cfg.RecheckDelay)

	case outcomeCompletedMeanwhile:
		// An earlier call went through after all (a 503 after Daraja had
		// processed it) and its outcome is in: nothing more to push, and no
		// prompt of this payment is open any more.
		log.Warn("payment completed while its push was being retried: not pushing again", "attempts", out.attempts, "last_error", out.err)
		if err := d.phones.release(work, req.Phone, out.lockRev); err != nil {
			log.Warn("phone lock not released; it expires by itself", "error", err)
		}
		d.ack(work, log, msg)

	case outcomeStopped:
		// Stopped between attempts: hand the request back for another
		// dispatcher at once. When an attempt was answered 503 it may
		// have prompted the customer, so the phone stays locked (the next
		// delivery decides, within UncertainRetryWindow or as ambiguous);
		// otherwise none can have, and the phone goes to the next in turn.
		log.Info("stopping: request handed back before its next attempt", "attempts", out.attempts, "last_error", out.err)
		if !rec.Uncertain {
			d.releaseInTurn(work, log, req.Phone, id, seq, out.lockRev)
		}
		if err := worker.HandBack(msg); err != nil {
			log.Warn("nak on stop", "error", err)
		}
	}
}

// found is what the STK stream and the push log hold of a payment.
type found struct {
	completed  bool            // stk.completed is stored
	dispatched bool            // stk.dispatched is stored
	pushed     *events.Attempt // the newest push logged, its record being gone
}

// evidence looks for what stops a push: the payment's stk.completed and,
// when its attempt record is gone (recordGone), its stk.dispatched and the
// pushes logged in STK_PUSHES. A replica's "not found" is confirmed by the
// stream's leader (events.LastMsg): the answer decides whether a customer is
// prompted.
func (d *dispatcher) evidence(ctx context.Context, id string, recordGone bool) (found, error) {
	var f found
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	has := func(s jetstream.Stream, subject string) (*jetstream.RawStreamMsg, error) {
		m, err := events.LastMsg(ctx, d.js, s, subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("look up %s: %w", subject, err)
		}
		return m, nil
	}
	m, err := has(d.stream, events.Subject(events.TypeCompleted, id))
	if err != nil || m != nil {
		f.completed = m != nil
		return f, err
	}
	if !recordGone {
		return f, nil
	}
	if m, err = has(d.stream, events.Subject(events.TypeDispatched, id)); err != nil || m != nil {
		f.dispatched = m != nil
		return f, err
	}
	if m, err = has(d.pushLog, events.PushLogSubject(id)); err != nil || m == nil {
		return f, err
	}
	var a events.Attempt
	if err := json.Unmarshal(m.Data, &a); err != nil || a.TrackingID != id {
		// Unreadable, it still says a push left.
		a = events.Attempt{TrackingID: id, Calls: 1, SentAt: m.Time.UTC(), FirstSentAt: m.Time.UTC()}
	}
	f.pushed = &a
	return f, nil
}

// logPush records in STK_PUSHES, before it leaves, that push number
// a.Calls of the payment is being sent.
func (d *dispatcher) logPush(ctx context.Context, a events.Attempt) error {
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode push log entry: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	_, err = d.js.Publish(ctx, events.PushLogSubject(a.TrackingID), body,
		jetstream.WithMsgID(fmt.Sprintf("%s:push:%d", a.TrackingID, a.Calls)),
		jetstream.WithExpectStream(events.PushLogStreamName))
	if err != nil {
		return fmt.Errorf("log push: %w", err)
	}
	return nil
}

// queueTimes are the phone waiting list's rules: an earlier waiter unseen
// for a while keeps its place as long as its request still waits.
func (d *dispatcher) queueTimes() queueTimes {
	return queueTimes{stale: d.cfg.queueStale, gone: d.cfg.queueGone, waiting: d.stillWaiting}
}

// stillWaiting reports whether the request of trackingID still waits for
// its phone: nothing it pushed can have reached Daraja (no attempt record,
// or one saying not_sent) and it has no outcome. When in doubt, it waits.
func (d *dispatcher) stillWaiting(ctx context.Context, trackingID string) bool {
	rec, _, err := d.attempts.get(ctx, trackingID)
	if err != nil {
		return true
	}
	if rec.State != "" && rec.State != events.AttemptNotSent {
		return false
	}
	f, err := d.evidence(ctx, trackingID, false)
	return err != nil || !f.completed
}

// leaveQueue takes a request that will not be pushed off its phone's
// waiting list, so that the requests after it need not wait for it.
func (d *dispatcher) leaveQueue(ctx context.Context, log *slog.Logger, phone, id string) {
	if err := d.phones.leave(ctx, phone, id, time.Now().UTC(), d.cfg.queueGone); err != nil {
		log.Warn("not taken off the phone's waiting list; the requests after it ask whether it still waits", "error", err)
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
	if err := d.phones.release(ctx, phone, lockRev); err != nil {
		log.Warn("phone lock not released; it expires by itself", "error", err)
	}
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
