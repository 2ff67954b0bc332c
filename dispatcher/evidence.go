package dispatcher

// The evidence of earlier pushes and outcomes a request's handling looks for
// before a push: the STK stream's and the push log's, asked of their leaders.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stkgate/stkgate/events"
)

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
	case events.Subject(events.TypeCompleted, id):
		f.completed = true
		return f, nil
	case events.Subject(events.TypeDispatched, id):
		f.dispatched = true
	case events.Subject(events.TypeRequested, id):
		first, err := d.firstFromLeader(ctx, events.StreamName, events.PaymentSubjects(id))
		if err != nil || first != nil && first.Sequence == m.Sequence {
			// The request is the payment's only event.
			return f, err
		}
		// Stored again after other events: each is asked for.
		fallthrough
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
