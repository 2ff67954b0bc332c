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
		// Nothing can have reached the customer: push (again).
		if rev != 0 {
			r.log.Info("request redelivered after attempts that did not reach Daraja: pushing again",
				"delivered", r.delivered, "calls", rec.Calls)
		}
		return rec, rev, true
	case events.AttemptAccepted, events.AttemptRefused, events.AttemptGaveUp:
		d.settleRecorded(r, rec)
	default:
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

// found is what the STK stream and the push log hold of a payment.
type found struct {
	completed  bool            // stk.completed is stored
	dispatched bool            // stk.dispatched is stored
	pushed     *events.Attempt // the newest push logged, its record being gone
}

// evidence looks for what stops a push: the payment's stk.completed and,
// when its attempt record is gone (recordGone), its stk.dispatched and the
// pushes logged in STK_PUSHES. Every "not found" here decides whether a
// customer is prompted, so each lookup is asked of the stream's leader
// (events.LastMsgFromLeader), never of a replica that may lag.
//
// Each is asked of the leader at once, without the direct get first that
// events.LastMsg tries: before a push these are normally not stored, and a
// direct get's "not found" would be asked of the leader again in any case.
func (d *dispatcher) evidence(ctx context.Context, id string, recordGone bool) (found, error) {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	if !recordGone {
		m, err := d.lastFromLeader(ctx, events.StreamName, events.Subject(events.TypeCompleted, id))
		return found{completed: m != nil}, err
	}
	f, err := d.streamEvidence(ctx, id)
	if err != nil || f.completed || f.dispatched {
		return f, err
	}
	m, err := d.lastFromLeader(ctx, events.PushLogStreamName, events.PushLogSubject(id))
	if err != nil || m == nil {
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

// streamEvidence is whether the STK stream holds the payment's
// stk.completed or stk.dispatched, read from its newest event first
// (events.PaymentSubjects): one round trip where asking for each would be
// two, for a request whose record is gone (every first push).
//
// The newest being its stk.requested proves neither is stored only when
// it is also the payment's oldest event, its only one (one round trip
// more). Every publisher of them acts on the stored request, so they are
// stored after it: the dispatcher while handling a delivery of the request
// (after a push, a give-up, or from the record on a redelivery),
// callback-ingest's stk.completed only for a payment whose stk.requested
// it found, the reconciler only from its consumers of stk.requested and
// stk.dispatched, and for a held callback whose request it found. But a
// stk.requested can be stored again after them: stkgate-admin dlq replay
// publishes a dead-lettered request under its Nats-Msg-Id, which
// JetStream stores again once the duplicate window has passed. A request
// whose attempt record is gone (STK_ATTEMPTS lost) and whose outcome came
// without a push (a give-up, not_dispatched: nothing in STK_PUSHES) would
// then be pushed after its stk.completed. Such a newest request is
// settled by asking for each event.
//
// The newest being stk.dispatched does not prove that stk.completed is
// not stored: a callback can be applied before stk.dispatched is (it
// follows Daraja's answer, the callback may come first), so stk.completed
// is still looked for. Any other newest (a stk.late_result, a subject this
// version does not know) is settled by asking for each event.
func (d *dispatcher) streamEvidence(ctx context.Context, id string) (found, error) {
	var f found
	m, err := d.lastFromLeader(ctx, events.StreamName, events.PaymentSubjects(id))
	if err != nil || m == nil {
		return f, err
	}
	switch m.Subject {
	case events.Subject(events.TypeRequested, id):
		first, err := d.firstFromLeader(ctx, events.StreamName, events.PaymentSubjects(id))
		if err != nil || first != nil && first.Sequence == m.Sequence {
			// The request is the payment's only event.
			return f, err
		}
		// Stored again after other events: each is asked for.
		if m, err = d.lastFromLeader(ctx, events.StreamName, events.Subject(events.TypeDispatched, id)); err != nil {
			return f, err
		}
		f.dispatched = m != nil
	case events.Subject(events.TypeCompleted, id):
		f.completed = true
		return f, nil
	case events.Subject(events.TypeDispatched, id):
		f.dispatched = true
	default:
		if m, err = d.lastFromLeader(ctx, events.StreamName, events.Subject(events.TypeDispatched, id)); err != nil {
			return f, err
		}
		f.dispatched = m != nil
	}
	m, err = d.lastFromLeader(ctx, events.StreamName, events.Subject(events.TypeCompleted, id))
	if m != nil {
		// A completion stops a push whatever else is stored.
		return found{completed: true}, err
	}
	return f, err
}

// lastFromLeader is the newest message on subject in stream, asked of
// its leader; nil when there is none.
func (d *dispatcher) lastFromLeader(ctx context.Context, stream, subject string) (*jetstream.RawStreamMsg, error) {
	return orNone(events.LastMsgFromLeader(ctx, d.js, stream, subject))
}

// firstFromLeader is the oldest message on subject in stream, asked of
// its leader; nil when there is none.
func (d *dispatcher) firstFromLeader(ctx context.Context, stream, subject string) (*jetstream.RawStreamMsg, error) {
	return orNone(events.FirstMsgFromLeader(ctx, d.js, stream, subject))
}

// orNone is a lookup's message, nil for "not found".
func orNone(m *jetstream.RawStreamMsg, err error) (*jetstream.RawStreamMsg, error) {
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, nil
	case err != nil:
		return nil, err // it names the stream and the subject
	}
	return m, nil
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
