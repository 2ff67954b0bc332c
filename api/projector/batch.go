package projector

// One batch handled: its messages decoded, applied in one transaction, and
// settled (acked, terminated or nak'ed).

import (
	"cmp"
	"context"
	"errors"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// item is a message and the event it carries.
type item struct {
	msg jetstream.Msg
	ev  events.Event
}

func (it item) trackingID() string { return it.ev.Base().TrackingID }

// decode reads the events of a batch's messages, and terminates the
// messages that are not events. Decoding is most of the projector's CPU:
// parts of a large batch are decoded side by side, on the cores there are.
func (p *projector) decode(msgs []jetstream.Msg) []item {
	items := make([]item, len(msgs))
	errs := make([]error, len(msgs))
	parts := min(runtime.GOMAXPROCS(0), len(msgs)/decodePart+1)
	var wg sync.WaitGroup
	for k := range parts {
		lo, hi := k*len(msgs)/parts, (k+1)*len(msgs)/parts
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				m := msgs[i]
				items[i].msg = m
				items[i].ev, errs[i] = Decode(m.Subject(), m.Data())
			}
		})
	}
	wg.Wait()
	out := items[:0]
	for i, it := range items {
		if errs[i] != nil {
			p.terminate(it.msg, events.TrackingIDOf(it.msg.Subject()), "malformed", errs[i])
			continue
		}
		out = append(out, it)
	}
	return out
}

// decodePart is the fewest messages worth a goroutine of their own.
const decodePart = 64

// errAfterHandBack is why a batch is handed back unapplied: an earlier
// batch writing one of its rows was handed back.
var errAfterHandBack = errors.New("an earlier batch writing the same payment was handed back")

// handle applies one decoded batch and settles every message in it: acked
// after commit, terminated if it can never be applied, or (only when ctx
// is cancelled during a database outage) returned to be handed back to
// another projector (back). A batch after one handed back (afterHandBack)
// is returned unapplied, so that a payment's events are still applied in
// stream order. The caller hands back what it returns once the last pull
// has ended (projector.settle): handed back before, a message could come
// back to that pull, and be handed back again after the later ones.
func (p *projector) handle(ctx context.Context, items []item, afterHandBack bool) (back []item) {
	defer p.traceBatch(items)()

	if afterHandBack {
		p.notApplied(items, errAfterHandBack)
		return items
	}
	err := p.apply(ctx, items)
	switch {
	case err == nil:
		p.ackAll(items)
		p.observe(items)
		return nil
	case !store.IsPermanent(err):
		p.notApplied(items, err)
		return items
	}

	// Some event of the batch can never be applied. Apply them one by one,
	// so that it alone is terminated.
	p.log.Warn("batch has an event that cannot be applied; applying one by one", "events", len(items), "error", err)
	for i, it := range items {
		err := p.apply(ctx, items[i:i+1])
		switch {
		case err == nil:
			p.ackAll(items[i : i+1])
			p.observe(items[i : i+1])
		case store.IsPermanent(err):
			p.terminate(it.msg, it.trackingID(), "rejected by the read model", err)
		default:
			p.notApplied(items[i:], err)
			return items[i:]
		}
	}
	return nil
}

// apply writes items in one transaction, retrying whatever is not
// permanent until it succeeds or ctx is cancelled. Between attempts the
// messages are kept with InProgress, so JetStream neither redelivers them
// nor counts deliveries towards MaxDeliver.
func (p *projector) apply(ctx context.Context, items []item) error {
	evs := make([]events.Event, len(items))
	for i, it := range items {
		evs[i] = it.ev
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(200*time.Millisecond),
		backoff.WithMaxInterval(p.cfg.RetryMaxInterval),
		backoff.WithMaxElapsedTime(0),
	)
	for attempt := 1; ; attempt++ {
		// A transaction under way is finished even when ctx is cancelled:
		// cancelling it would only throw the work away.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ApplyTimeout)
		err := p.store.Apply(actx, evs)
		cancel()
		if err == nil || store.IsPermanent(err) {
			if err == nil && attempt > 1 {
				p.log.Info("database took the batch after retries", "events", len(items), "attempts", attempt)
			}
			return err
		}
		wait := b.NextBackOff()
		p.log.Error("apply failed; retrying", "events", len(items), "attempt", attempt, "retry_in", wait, "error", err)
		p.inProgress(items)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		p.inProgress(items)
	}
}

func (p *projector) ackAll(items []item) {
	for _, it := range items {
		if err := it.msg.Ack(); err != nil {
			// The event stays unacked and comes back after the AckWait;
			// applying it again changes nothing.
			p.log.Warn("ack failed", "tracking_id", it.trackingID(), "type", it.ev.Type(), "error", err)
			continue
		}
		p.log.Debug("event applied", "tracking_id", it.trackingID(), "type", it.ev.Type())
	}
}

// notApplied logs a batch, or the rest of one, that a stop leaves
// unapplied: it is handed back once the last pull has ended (settle).
func (p *projector) notApplied(items []item, cause error) {
	p.log.Warn("stopping with events not applied; handing them back", "events", len(items), "error", cause)
}

// handBack hands msgs back to the next projector in stream order, so that
// nats-server, which redelivers the messages whose delay is over in
// stream order, sends them again in the order they came.
//
// worker.HandBack, not a plain Nak: a plain Nak is delivered at once to the
// first pull request waiting, which at a stop is often this projector's
// own, and the message would then wait out the AckWait (30 s). The
// consumer has no BackOff (events.ProjectorConsumer), so HandBack's delay
// is the one nats-server applies.
func (p *projector) handBack(msgs []jetstream.Msg) {
	seq := func(m jetstream.Msg) uint64 {
		if md, err := m.Metadata(); err == nil {
			return md.Sequence.Stream
		}
		return math.MaxUint64
	}
	slices.SortStableFunc(msgs, func(a, b jetstream.Msg) int { return cmp.Compare(seq(a), seq(b)) })
	for _, m := range msgs {
		if err := worker.HandBack(m); err != nil {
			p.log.Warn("nak failed", "tracking_id", events.TrackingIDOf(m.Subject()), "error", err)
		}
	}
}

func (p *projector) inProgress(items []item) {
	for _, it := range items {
		if err := it.msg.InProgress(); err != nil {
			p.log.Warn("in-progress failed", "tracking_id", it.trackingID(), "error", err)
		}
	}
}

// terminate tells JetStream never to deliver m again. That loses the event
// for the read model, so it is logged as an error with what is needed to
// find it in the stream.
func (p *projector) terminate(m jetstream.Msg, trackingID, why string, cause error) {
	attrs := []any{"tracking_id", trackingID, "subject", m.Subject(), "error", cause}
	if md, err := m.Metadata(); err == nil {
		attrs = append(attrs, "stream_seq", md.Sequence.Stream)
	}
	p.log.Error("event terminated: "+why, attrs...)
	reason := why + ": " + cause.Error()
	if len(reason) > 200 {
		reason = reason[:200]
	}
	if err := m.TermWithReason(reason); err != nil {
		p.log.Warn("term failed", "tracking_id", trackingID, "error", err)
	}
}
