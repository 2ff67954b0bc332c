package main

// Requests stored again (Options.RequestReplays): an operator's
// stkgate-admin dlq replay of a dead-lettered stk.requested, run after
// JetStream's duplicate window (events.DuplicateWindow) has passed, stores
// the payment's request in the STK stream a second time, after its
// stk.dispatched and stk.completed (docs/OPERATIONS.md, "DLQ"). The
// dispatcher must not prompt the customer again, and the read model must
// keep the payment's outcome.
//
// The run goes the operator's way: it raises the max-deliveries advisory
// JetStream would (the projector's dead-letter watcher turns it into a dead
// letter in STK_DLQ), then runs `stkgate-admin dlq replay SEQ --yes`
// through the admin package's own code (admin.RunWith). Only the hour is
// stood in for: its JetStream gives the replayed message a Nats-Msg-Id the
// duplicate window no longer remembers (pastWindow).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/admin"
	"github.com/stkgate/stkgate/api/deadletter/advisory"
	"github.com/stkgate/stkgate/events"
)

// planReplayRequests is the chaos plan's entry for storing requests again.
const planReplayRequests = "replay-requests"

// requestReplayFigures are the requests the run stored again.
type requestReplayFigures struct {
	Asked    int // Options.RequestReplays
	Finished int // of payments final in the read model
	InFlight int // of payments not final yet
	// RecordGone: finished payments whose attempt record (STK_ATTEMPTS)
	// was purged before the replay; RecordGoneUnpushed, of those, the
	// ones with nothing in STK_PUSHES (an outcome without a push), whose
	// stk.completed alone stops the push; PushLogPurged, the ones whose
	// push log was purged too, to look so when no payment had ended
	// without a push yet.
	RecordGone, RecordGoneUnpushed, PushLogPurged int
	// Before are the finished payments' records when their request was
	// stored again: analyse checks that each ends as it was.
	Before map[string]row
}

// replayRequests stores again the stk.requested of Options.RequestReplays
// payments: two thirds of them already final in the read model, the rest
// still in flight. A request that could not be stored again is a chaos
// error.
//
// The first final one has its attempt record purged, which leaves the
// dispatcher only the STK stream and the push log to go by. Its newest
// event is then the request stored again: only the stream's stk.completed
// (and stk.dispatched), older, stop a push, and for a payment that ended
// without a push (a give-up, not_dispatched) nothing else does. One such
// payment is picked when there is one; else the payment's push log is
// purged too, so that it looks like one.
func (r *runner) replayRequests(ctx context.Context) {
	r.requestReplays.Asked = r.o.RequestReplays
	r.requestReplays.Before = map[string]row{}
	rows, err := readRows(ctx, r.db)
	if err != nil {
		r.chaosErr("replay requests: read Postgres: %v", err)
		return
	}
	var finished, inFlight []string
	for id, row := range rows {
		if row.status == events.StatusFinal {
			finished = append(finished, id)
		} else {
			inFlight = append(inFlight, id)
		}
	}
	// Sorted, then shuffled by the run's seed: a seed repeats its picks.
	sort.Strings(finished)
	sort.Strings(inFlight)
	r.rng.Shuffle(len(finished), func(i, j int) { finished[i], finished[j] = finished[j], finished[i] })
	r.rng.Shuffle(len(inFlight), func(i, j int) { inFlight[i], inFlight[j] = inFlight[j], inFlight[i] })
	nInFlight := min(len(inFlight), r.o.RequestReplays/3)
	nFinished := min(len(finished), r.o.RequestReplays-nInFlight)

	nc, js, err := connectJS(ctx, r.natsURL)
	if err != nil {
		r.chaosErr("replay requests: %v", err)
		return
	}
	defer nc.Close()
	if nFinished > 0 {
		// The first finished one loses its attempt record: one whose
		// outcome came without a push if there is one; else one whose
		// customer answered a prompt (a push again would prompt them
		// again, which the run sees), whose push log goes too.
		if i := unpushed(ctx, js, finished); i >= 0 {
			finished[0], finished[i] = finished[i], finished[0]
			r.requestReplays.RecordGoneUnpushed++
		} else {
			if i := slices.IndexFunc(finished, func(id string) bool { return rows[id].source == events.SourceCallback }); i > 0 {
				finished[0], finished[i] = finished[i], finished[0]
			}
			if err := purgePushLog(ctx, js, finished[0]); err != nil {
				r.chaosErr("replay requests: %v", err)
			} else {
				r.requestReplays.PushLogPurged++
			}
		}
		if err := purgeAttempt(ctx, js, finished[0]); err != nil {
			r.chaosErr("replay requests: %v", err)
		} else {
			r.requestReplays.RecordGone++
		}
	}
	for i, id := range append(finished[:nFinished:nFinished], inFlight[:nInFlight]...) {
		if err := replayRequest(ctx, js, id); err != nil {
			r.chaosErr("replay request %s: %v", id, err)
			continue
		}
		if i < nFinished {
			r.requestReplays.Finished++
			r.requestReplays.Before[id] = rows[id]
		} else {
			r.requestReplays.InFlight++
		}
	}
	q := r.requestReplays
	r.logf("requests stored again (dlq replay past the duplicate window): %d finished (attempt record purged %d: ended without a push %d, push log purged %d), %d in flight",
		q.Finished, q.RecordGone, q.RecordGoneUnpushed, q.PushLogPurged, q.InFlight)
}

func (r *runner) chaosErr(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.chaosErrs = append(r.chaosErrs, msg)
	r.logf("%s", msg)
}

// connectJS connects to nats-server, retrying for up to 30 s while it is
// down (a kill may have just hit it).
func connectJS(ctx context.Context, natsURL string) (*nats.Conn, jetstream.JetStream, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		nc, err := nats.Connect(natsURL, nats.Name("stkgate-chaos-replay"), nats.Timeout(2*time.Second))
		if err == nil {
			js, err := jetstream.New(nc)
			if err == nil {
				return nc, js, nil
			}
			nc.Close()
		}
		if sleep(ctx, 200*time.Millisecond); ctx.Err() != nil {
			return nil, nil, fmt.Errorf("connect to NATS: %w", err)
		}
	}
}

// unpushed is the index of the first of ids with nothing in STK_PUSHES
// (a payment that ended without a push), or -1.
func unpushed(ctx context.Context, js jetstream.JetStream, ids []string) int {
	for i, id := range ids {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := events.LastMsgFromLeader(lctx, js, events.PushLogStreamName, events.PushLogSubject(id))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return i
		}
	}
	return -1
}

// purgeAttempt removes trackingID's attempt record from STK_ATTEMPTS, as
// a bucket lost or purged would.
func purgeAttempt(ctx context.Context, js jetstream.JetStream, trackingID string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, events.AttemptsBucket)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", events.AttemptsBucket, err)
	}
	if err := kv.Purge(ctx, trackingID); err != nil {
		return fmt.Errorf("purge attempt record %s: %w", trackingID, err)
	}
	return nil
}

// purgePushLog removes trackingID's pushes from STK_PUSHES.
func purgePushLog(ctx context.Context, js jetstream.JetStream, trackingID string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.PushLogStreamName)
	if err != nil {
		return fmt.Errorf("stream %s: %w", events.PushLogStreamName, err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(events.PushLogSubject(trackingID))); err != nil {
		return fmt.Errorf("purge the push log of %s: %w", trackingID, err)
	}
	return nil
}

// replayRequest dead-letters trackingID's stk.requested (the advisory
// JetStream raises when the dispatcher's consumer gives up on it), waits
// for the projector's watcher to store the dead letter, and replays it as
// stkgate-admin dlq replay --yes does, past the duplicate window.
func replayRequest(ctx context.Context, js jetstream.JetStream, trackingID string) error {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	orig, err := events.FirstMsgFromLeader(ctx, js, events.StreamName, events.Subject(events.TypeRequested, trackingID))
	if err != nil {
		return fmt.Errorf("read its stk.requested: %w", err)
	}
	adv, err := json.Marshal(advisory.Advisory{Type: advisory.TypeMaxDeliveries, ID: uuid.NewString(), Time: time.Now().UTC(),
		Stream: events.StreamName, Consumer: events.ConsumerDispatcher, StreamSeq: orig.Sequence, Deliveries: 50})
	if err != nil {
		return err
	}
	subject := events.AdvisoryMaxDeliveriesPrefix + "." + events.StreamName + "." + events.ConsumerDispatcher
	seq, err := deadLetterOf(ctx, js, subject, adv, trackingID, orig.Sequence)
	if err != nil {
		return err
	}
	var out, errOut bytes.Buffer
	code := admin.RunWith(ctx, []string{"dlq", "replay", strconv.FormatUint(seq, 10), "--yes"}, nil, &out, &errOut,
		admin.Deps{JS: pastWindow{js}})
	if code != admin.ExitOK || !strings.Contains(out.String(), "replayed as") {
		return fmt.Errorf("stkgate-admin dlq replay %d: exit %d: %s%s", seq, code, strings.TrimSpace(out.String()), strings.TrimSpace(errOut.String()))
	}
	return nil
}

// deadLetterOf publishes the advisory (again every few seconds, while the
// projector is down or STK_ADVISORIES misses it) until its watcher has
// stored the dead letter of STK message streamSeq, and returns its
// sequence in STK_DLQ.
func deadLetterOf(ctx context.Context, js jetstream.JetStream, subject string, adv []byte, trackingID string, streamSeq uint64) (uint64, error) {
	var last error
	var published time.Time
	for ; ctx.Err() == nil; sleep(ctx, 200*time.Millisecond) {
		if time.Since(published) > 5*time.Second {
			if _, last = js.Publish(ctx, subject, adv); last == nil {
				published = time.Now()
			}
		}
		dlq, err := js.Stream(ctx, events.DeadLetterStreamName)
		if err != nil {
			last = err
			continue
		}
		m, err := dlq.GetLastMsgForSubject(ctx, events.DeadLetterSubject(events.ConsumerDispatcher, trackingID))
		if err != nil {
			last = err
			continue
		}
		if m.Header.Get(events.DeadLetterHeaderStreamSeq) == strconv.FormatUint(streamSeq, 10) {
			return m.Sequence, nil
		}
	}
	return 0, fmt.Errorf("no dead letter of %s:%d stored: %w", events.StreamName, streamSeq, last)
}

// pastWindow is JetStream an hour later: what it publishes carries a
// Nats-Msg-Id that its duplicate window no longer remembers, so that
// stkgate-admin dlq replay's publish is stored as it would be after the
// window, instead of being dropped as a duplicate.
type pastWindow struct{ jetstream.JetStream }

func (p pastWindow) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	// The last WithMsgID wins.
	return p.JetStream.PublishMsg(ctx, m, append(opts, jetstream.WithMsgID("chaos-past-window:"+uuid.NewString()))...)
}

// requestReplayChanges are the finished payments whose record is not
// what it was when their request was stored again (before): a request
// stored again must not take a payment back, nor change its outcome.
func requestReplayChanges(before, rows map[string]row) []string {
	var changed []string
	for id, was := range before {
		now, ok := rows[id]
		switch {
		case !ok:
			changed = append(changed, id+": record gone")
		case now.status != was.status || now.responseCode != was.responseCode:
			changed = append(changed, fmt.Sprintf("%s: status %d code %q, was status %d code %q", id, now.status, now.responseCode, was.status, was.responseCode))
		}
	}
	return changed
}
