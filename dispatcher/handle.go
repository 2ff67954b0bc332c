package dispatcher

// Handling one stk.requested: the checks before a push and the phone's
// turn. The evidence of earlier deliveries is in evidence.go, what follows
// the push in afterpush.go, the push itself in push.go.

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/tracing"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// delivery is one delivery of a well-formed stk.requested, and what every
// step of its handling needs.
type delivery struct {
	stop, work context.Context // as in handle
	msg        jetstream.Msg
	log        *slog.Logger // with tracking_id, phone (masked) and amount
	id         string       // the tracking id
	req        events.Requested
	delivered  uint64 // JetStream's delivery count
	seq        uint64 // the request's stream sequence
}

// handle dispatches one stk.requested. stop ends on shutdown: no new attempt
// starts after it. work ends only after the shutdown timeout: an attempt in
// flight and the recording of an outcome get that long to finish.
//
// The attempt record (STK_ATTEMPTS) is read first and written before every
// push, so that whatever delivery of the request comes next, and whichever
// dispatcher instance gets it, knows whether a push may already have
// reached the customer.
//
// Each step either lets the request go on or settles its message (ack, nak,
// hand-back or term) and ends the handling.
func (d *dispatcher) handle(stop, work context.Context, msg jetstream.Msg) {
	r, ok := d.readRequest(stop, work, msg)
	if !ok {
		return
	}
	if stop.Err() != nil {
		// Fetched as the dispatcher stopped: hand it back untouched.
		handBack(r.log, msg)
		return
	}
	r.delivered, r.seq = deliveryOf(msg)
	done := d.takeShare(r)
	if done == nil {
		return
	}
	defer done()
	rec, rev, ok := d.readRecord(r)
	if !ok {
		return
	}
	lockRev, ok := d.takePhone(r, rec, rev)
	if !ok {
		return
	}
	if !d.clearToPush(r, rec, rev, lockRev) {
		return
	}
	out := d.push(r, &rec, rev, lockRev)
	d.afterPush(r, rec, out)
}

// readRequest decodes msg and checks it against its subject. A malformed
// request is terminated (ok false).
func (d *dispatcher) readRequest(stop, work context.Context, msg jetstream.Msg) (*delivery, bool) {
	id := events.TrackingIDOf(msg.Subject())
	req, malformed := requestOf(msg.Data(), id)
	if malformed != "" {
		d.terminate(tracing.Logger(d.log.With("tracking_id", id), work), msg, malformed)
		return nil, false
	}
	// One With for the three: each is a copy of the handler's state and an
	// encoding of what it adds, made on every delivery.
	log := tracing.Logger(d.log.With("tracking_id", id, "phone", events.MaskPhone(req.Phone), "amount", req.Amount), work)
	return &delivery{stop: stop, work: work, msg: msg, log: log, id: id, req: req}, true
}

// requestOf decodes the stk.requested of tracking id id from data; when it
// is malformed, why says how.
func requestOf(data []byte, id string) (req events.Requested, why string) {
	// The envelope and its data in one pass (another type is malformed).
	env, err := events.DecodeAs[events.Requested](data)
	if err != nil {
		return req, err.Error()
	}
	req = env.Data
	if req.TrackingID != id {
		return req, fmt.Sprintf("tracking_id %q does not match the subject", req.TrackingID)
	}
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		// callback-ingest takes callbacks only for canonical UUIDs: a push
		// for any other id could be paid and never completed.
		return req, "tracking id is not a canonical UUID"
	}
	return req, ""
}

// deliveryOf is msg's delivery count and stream sequence (1 and 0 when its
// metadata cannot be read).
func deliveryOf(msg jetstream.Msg) (delivered, seq uint64) {
	delivered, seq = 1, 0
	if meta, err := msg.Metadata(); err == nil {
		delivered, seq = meta.NumDelivered, meta.Sequence.Stream
	}
	return delivered, seq
}

// handBack returns msg to JetStream for another dispatcher at once.
func handBack(log *slog.Logger, msg jetstream.Msg) {
	if err := worker.HandBack(msg); err != nil {
		log.Warn("nak on stop", "error", err)
	}
}

// takeShare takes a worker within the client's share of them and returns
// its release; while the client is at its share, the request is naked to
// wait (done nil).
func (d *dispatcher) takeShare(r *delivery) (done func()) {
	// Past half its deliveries a request goes whatever its client's share,
	// so that waiting for it never costs a payment (the phone's waits need
	// the other half).
	done, wait, why := d.shares.take(ask{client: r.req.Client, phone: r.req.Phone, id: r.id, seq: r.seq}, time.Now(), r.delivered >= uint64(d.cfg.maxDeliver/2))
	if done != nil {
		return done
	}
	line := "client at its share of the workers: waiting for the other clients' requests"
	if why == behindPhone {
		line = "an earlier request for the phone waits for its client's share: waiting behind it"
	}
	r.log.Debug(line, "client", r.req.Client, "retry_in", wait.Round(time.Millisecond).String(), "delivered", r.delivered)
	worker.Nak(r.log, r.msg, wait)
	return nil
}

// readRecord reads the attempt record (rec at revision rev) and goes on
// (ok true) only when nothing of an earlier delivery can have reached the
// customer. A request whose outcome was recorded, or whose earlier push may
// have prompted the customer, is settled here.
func (d *dispatcher) readRecord(r *delivery) (rec events.Attempt, rev uint64, ok bool) {
	rec, rev, err := d.attempts.get(r.work, r.id)
	if err != nil {
		r.log.Error("cannot read the attempt record: not pushing; retrying later", "error", err)
		worker.Nak(r.log, r.msg, d.cfg.RecheckDelay)
		return rec, rev, false
	}
	switch rec.State {
	case "", events.AttemptNotSent:
		if left, ok := d.uncertainLeft(rec); ok && left > 0 && r.delivered < uint64(d.cfg.maxDeliver) {
			// A push answered 503 moments ago: the delivery that got the
			// 503 retries within its window itself. Another delivery (of
			// another instance, whose clock may be behind) could take the
			// window for open when it has closed, and prompt twice. Look
			// again once it has closed: the push is then ambiguous
			// (safeToPush), unless the retry settled it.
			wait := left + d.cfg.RecheckDelay
			r.log.Info("a push answered 503 moments ago is retried by its own delivery: looking again once its window has closed",
				"calls", rec.Calls, "delivered", r.delivered, "retry_in", wait.Round(time.Millisecond).String())
			worker.Nak(r.log, r.msg, wait)
			return rec, rev, false
		}
		// Nothing can have reached the customer: push (again).
		if rev != 0 {
			r.log.Info("request redelivered after attempts that did not reach Daraja: pushing again",
				"delivered", r.delivered, "calls", rec.Calls)
		}
		return rec, rev, true
	case events.AttemptAccepted, events.AttemptRefused, events.AttemptGaveUp:
		d.settleRecorded(r, rec)
	default:
		if left := d.callMayBeInFlight(rec); left > 0 && r.delivered < uint64(d.cfg.maxDeliver) {
			// Another delivery's push may be in the air (its dispatcher
			// alive: the consumer was created again, or a stall outlasted
			// the AckWait). Its answer says whether it left: look again,
			// every RecheckDelay, until the call must be over. Acked now,
			// a push that answer says was not sent would be left to that
			// dispatcher's memory, and if it stopped before retrying
			// nothing would push the request again. A record still
			// sending after that is a dispatcher that died mid-call,
			// settled below.
			wait := min(left, d.cfg.RecheckDelay)
			r.log.Info("a push of this request may be in flight from another delivery: looking again until its call must be over",
				"calls", rec.Calls, "delivered", r.delivered, "retry_in", wait.Round(time.Millisecond).String(),
				"call_over_in", left.Round(time.Millisecond).String())
			worker.Nak(r.log, r.msg, wait)
			return rec, rev, false
		}
		// sending, ambiguous (or a state this version does not know): a
		// push may have prompted the customer; another could charge them
		// twice. The callback or the reconciler settles it.
		r.log.Warn("an earlier delivery may have prompted the customer: not pushing again; the callback or the reconciler settles it",
			"state", rec.State, "calls", rec.Calls, "delivered", r.delivered)
		d.leaveQueue(r.work, r.log, r.req.Phone, r.id)
		d.ack(r.work, r.log, r.msg)
	}
	return rec, rev, false
}

// callMayBeInFlight is how long a push the record says is sending may still
// be in the air or its answer not yet written down: it must leave within
// sendWithin of its SentAt, its call lasts at most the client's Timeout, and
// answerGrace is allowed after that for the answer's writes. Zero for a
// record in any other state, or past that.
func (d *dispatcher) callMayBeInFlight(rec events.Attempt) time.Duration {
	if rec.State != events.AttemptSending {
		return 0
	}
	call := d.cfg.Daraja.Timeout
	if call <= 0 {
		call = daraja.DefaultTimeout
	}
	since := rec.SentAt
	if rec.UpdatedAt.After(since) {
		since = rec.UpdatedAt
	}
	return max(time.Until(since.Add(d.cfg.sendWithin+call+d.cfg.answerGrace)), 0)
}

// answerGrace is how long after a push's call must be over its answer may
// still be written down: the phone's lock renewed, then the attempt record
// put (each up to kvTimeout, the put retried while NATS is slow), on a
// machine whose clock may be a little apart from the reader's.
const answerGrace = 30 * time.Second

// settleRecorded settles a request redelivered after its outcome (rec) was
// recorded: its event is stored if missing, and it is not pushed again.
func (d *dispatcher) settleRecorded(r *delivery, rec events.Attempt) {
	r.log.Info("request redelivered after its outcome was recorded: not pushing again; making sure its event is stored",
		"state", rec.State, "delivered", r.delivered)
	if err := d.restore(r.work, r.log, r.msg, r.req, rec); err != nil {
		r.log.Error("event of a recorded outcome not stored; leaving the request for redelivery", "error", err, "state", rec.State)
		worker.Nak(r.log, r.msg, d.cfg.RecheckDelay)
		return
	}
	d.leaveQueue(r.work, r.log, r.req.Phone, r.id)
	d.ack(r.work, r.log, r.msg)
}

// takePhone takes the phone's lock for the request (ok true, the lock at
// lockRev). While another payment holds it, or an earlier request waits for
// it, the request waits in JetStream; on its last delivery it gives up.
func (d *dispatcher) takePhone(r *delivery, rec events.Attempt, rev uint64) (lockRev uint64, ok bool) {
	lockRev, holder, err := d.phones.acquire(r.work, r.req.Phone, r.id, r.seq, time.Now().UTC(), d.queueTimes())
	if err != nil {
		r.log.Error("cannot take the phone's lock: not pushing; retrying later", "error", err)
		worker.Nak(r.log, r.msg, d.cfg.RecheckDelay)
		return 0, false
	}
	if holder == "" {
		return lockRev, true
	}
	if r.delivered >= uint64(d.cfg.maxDeliver) {
		// The last delivery JetStream will make: finish the payment
		// rather than let it run out unanswered.
		d.giveUpBusyPhone(r, rec, rev, holder)
		return 0, false
	}
	// Another payment's prompt may be open on this phone, or an
	// earlier request waits for it: wait in JetStream (durably), on the
	// phone's waiting list, and look again later.
	r.log.Debug("phone busy with another payment's prompt: waiting", "before_tracking_id", holder, "delivered", r.delivered)
	worker.Nak(r.log, r.msg, d.cfg.PhoneWait)
	return 0, false
}

// giveUpBusyPhone finishes, on its last delivery, a request whose phone
// another payment (holder) kept busy: it leaves the phone's waiting list and
// its record (rec at revision rev) says given up, or ambiguous when an
// earlier push may have prompted the customer.
func (d *dispatcher) giveUpBusyPhone(r *delivery, rec events.Attempt, rev uint64, holder string) {
	r.log.Warn("phone busy for too long: giving up", "holder_tracking_id", holder, "delivered", r.delivered)
	if err := d.phones.leave(r.work, r.req.Phone, r.id, time.Now().UTC(), d.cfg.queueGone); err != nil {
		r.log.Warn("not taken off the phone's waiting list; the entry goes stale", "error", err)
	}
	rec.TrackingID = r.id
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
	if _, err := d.attempts.put(r.work, rec, rev); err != nil {
		r.log.Error("cannot record giving up; retrying later", "error", err)
		worker.Nak(r.log, r.msg, d.cfg.RecheckDelay)
		return
	}
	if rec.State == events.AttemptAmbiguous {
		d.ack(r.work, r.log, r.msg)
		return
	}
	if err := d.publish(r.work, r.log, r.msg, completedOf(r.req, rec)); err != nil {
		r.log.Error("OUTCOME NOT RECORDED: stk.completed could not be published; leaving the request for redelivery", "error", err)
		return
	}
	d.ack(r.work, r.log, r.msg)
}

// clearToPush looks, with the phone's lock held (at lockRev), for evidence
// of an earlier push or outcome that the attempt record (rec at revision
// rev; 0: none) does not show, and goes on (true) only when there is none.
func (d *dispatcher) clearToPush(r *delivery, rec events.Attempt, rev, lockRev uint64) bool {
	// The phone is ours. Before the push: a request whose record is gone
	// (STK_ATTEMPTS purged or lost, the consumer recreated) may have been
	// pushed, or finished, long ago; a request whose earlier pushes did
	// not reach Daraja may have been finished meanwhile.
	switch found, err := d.evidence(r.work, r.id, rev == 0); {
	case err != nil:
		r.log.Error("cannot tell whether the payment was pushed or finished before: not pushing; retrying later", "error", err)
		worker.Nak(r.log, r.msg, d.cfg.RecheckDelay)
	case found.completed:
		r.log.Warn("request redelivered after its outcome was stored: not pushing", "attempt_state", rec.State, "delivered", r.delivered)
		d.unlockPhone(r.work, r.log, r.req.Phone, lockRev)
		d.ack(r.work, r.log, r.msg)
	case found.dispatched:
		// Daraja accepted a push for it: its prompt may be open, so the
		// lock stays until the completion (or its TTL).
		r.log.Warn("request redelivered without its attempt record, but Daraja accepted its push: not pushing again", "delivered", r.delivered)
		d.ack(r.work, r.log, r.msg)
	case found.pushed != nil:
		d.rewriteLostRecord(r, *found.pushed)
	default:
		return true
	}
	return false
}

// rewriteLostRecord settles a request whose attempt record is gone though
// the push log shows a push (a) left for it.
func (d *dispatcher) rewriteLostRecord(r *delivery, a events.Attempt) {
	// A push left and its record is gone: its fate is unknown. The
	// record is written again as ambiguous, so the reconciler waits for
	// its callback from the time it left; the lock stays.
	a.TrackingID, a.State, a.UpdatedAt = r.id, events.AttemptAmbiguous, time.Now().UTC()
	a.ErrorCode, a.ErrorMessage = CodeRecordLost, "the attempt record was lost after a push was sent; its outcome is unknown"
	if _, err := d.attempts.put(r.work, a, 0); err != nil {
		r.log.Error("push log shows a push whose record is gone; record not written again, retrying later", "error", err)
		worker.Nak(r.log, r.msg, d.cfg.RecheckDelay)
		return
	}
	r.log.Warn("request redelivered without its attempt record, but a push left for it: not pushing again; the callback or the reconciler settles it",
		"calls", a.Calls, "sent_at", a.SentAt, "delivered", r.delivered)
	d.ack(r.work, r.log, r.msg)
}

// leaveQueue takes a request that will not be pushed off its phone's
// waiting list, so that the requests after it need not wait for it.
func (d *dispatcher) leaveQueue(ctx context.Context, log *slog.Logger, phone, id string) {
	if err := d.phones.leave(ctx, phone, id, time.Now().UTC(), d.cfg.queueGone); err != nil {
		log.Warn("not taken off the phone's waiting list; the requests after it ask whether it still waits", "error", err)
	}
}
