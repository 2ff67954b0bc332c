// Package projector writes every STK event into the Postgres read model.
//
// It reads the STK stream through the durable "projector" consumer, applies
// events in batches of up to Config.BatchSize in one transaction each
// (store.Apply, idempotent and state-ordered), up to four batches at once
// when they share no payment (inFlight), and acks each batch's events after
// its commit. Running several projectors on the same consumer is safe.
//
// Failure handling, with money at stake:
//   - a message that is not an event is terminated and logged;
//   - an event the database can never take (store.IsPermanent) is found by
//     applying its batch one event at a time, then terminated and logged,
//     so it cannot hold up the others;
//   - a completion is never among those: store.Apply applies one it cannot
//     take as sent as an invalid outcome (Failed, events.CodeInvalidOutcome;
//     Unknown, events.CodeUnverifiedSuccess, when it said success)
//     and logs it, so no payment is left Pending by its completion;
//   - any other failure (database down, deadlock, timeout) is retried with
//     backoff while the batch is kept with InProgress: an outage never uses
//     up the consumer's MaxDeliver (unlimited anyway) and never skips an
//     event. A projector stopped during an outage hands its batch back
//     (worker.HandBack) to the next one, and every later batch it holds
//     that writes one of the same payments, unapplied (applier.start), in
//     stream order once its last pull has ended (settle).
//
// An stk.late_result is kept beside the outcome (the record's
// late_result), never in its place.
//
// A terminated event, or one that used up MaxDeliver on any STK consumer, is
// copied to STK_DLQ by the dead-letter watcher Run starts beside the
// projector.
package projector

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/api/deadletter"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/tracing"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// A batch takes the events already received and those that follow within
// gap of the one before, for at most linger after its first one and up to
// Config.BatchSize. Under load the events wait in the fetcher's buffer
// while batches are written, so batches fill without waiting; at a few
// hundred events a second, a batch that waited out the whole linger for
// more would add its 5 ms to every event's time to the read model, for a
// handful of events more per transaction.
const (
	linger = 5 * time.Millisecond
	gap    = 200 * time.Microsecond
)

// Run projects events until ctx is cancelled; then it applies and acks the
// events it already holds and those its last pull still gets (for up to
// DrainTimeout), hands back the rest (worker.HandBack) and returns nil: a
// stop leaves no event to the consumer's AckWait. It returns an error if
// it cannot start within StartTimeout.
//
// It also runs the dead-letter watcher (api/deadletter), which copies
// every STK message a consumer gave up on into STK_DLQ. It shares the
// projector's connection and stops with it; an error of the watcher (a
// stream JetStream refuses) stops the projector too.
func Run(ctx context.Context, cfg Config) (runErr error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	log := cfg.Logger
	tp, stopTracing := tracing.Start(cfg.Tracing, log)
	defer stopTracing()

	nc, js, err := events.ConnectJetStream(cfg.NATSURL, "stkgate-projector", log)
	if err != nil {
		return err
	}
	// Acks are sent asynchronously: Close flushes them first.
	defer events.Close(nc, log)

	// Several projectors may run: the watcher's consumer is durable, so
	// they share the work.
	ctx, stopWatcher := context.WithCancelCause(ctx)
	watcherDone := make(chan error, 1)
	go func() {
		err := deadletter.Run(ctx, deadletter.Config{JS: js, Replicas: cfg.StreamReplicas, Logger: log, Metrics: cfg.Metrics})
		if err != nil {
			stopWatcher(err)
		}
		watcherDone <- err
	}()
	defer func() {
		stopWatcher(nil)
		if err := <-watcherDone; err != nil && runErr == nil {
			runErr = fmt.Errorf("dead-letter watcher: %w", err)
		}
	}()

	startCtx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	db, err := worker.RetryStart(startCtx, log, "open database", func(ctx context.Context) (*sqlx.DB, error) {
		return store.Open(ctx, cfg.DatabaseURL)
	})
	if err != nil {
		return startErr(ctx, err)
	}
	defer db.Close()
	if _, err := worker.RetryStart(startCtx, log, "migrate database", func(ctx context.Context) (struct{}, error) {
		return struct{}{}, store.Migrate(ctx, db.DB)
	}); err != nil {
		return startErr(ctx, err)
	}
	p := &projector{
		cfg:   cfg,
		log:   log,
		js:    js,
		store: store.New(db).WithLogger(log),
	}
	p.tracer = tracing.Tracer(tp)
	if err := p.ensureConsumer(startCtx); err != nil {
		return startErr(ctx, err)
	}
	p.watchMetrics(nc, db)
	cancel()
	log.Info("projector started", "batch_size", cfg.BatchSize)
	p.loop(ctx)
	log.Info("projector stopped")
	return nil
}

// startErr is nil when start-up was cut short by ctx: stopping before
// having started is a clean stop.
func startErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

type projector struct {
	cfg   Config
	log   *slog.Logger
	js    jetstream.JetStream
	store *store.Store
	cons  jetstream.Consumer
	// tracer traces each event's projection (traceBatch); nil is off.
	tracer trace.Tracer
}

func (p *projector) ensureConsumer(ctx context.Context) error {
	if _, err := worker.RetryStart(ctx, p.log, "ensure stream", func(ctx context.Context) (jetstream.Stream, error) {
		return events.EnsureStream(ctx, p.js, p.cfg.StreamReplicas)
	}); err != nil {
		return err
	}
	// Before the consumer: an advisory raised while nothing stores them is
	// lost, and the dead-letter watcher starting beside us may be slower.
	if _, err := worker.RetryStart(ctx, p.log, "ensure advisory stream", func(ctx context.Context) (jetstream.Stream, error) {
		return events.EnsureAdvisoryStream(ctx, p.js, p.cfg.StreamReplicas)
	}); err != nil {
		return err
	}
	cons, err := worker.RetryStart(ctx, p.log, "create consumer", func(ctx context.Context) (jetstream.Consumer, error) {
		return p.js.CreateOrUpdateConsumer(ctx, events.StreamName, events.ProjectorConsumer())
	})
	if err != nil {
		return err
	}
	p.cons = cons
	return nil
}

// loop consumes until ctx is cancelled, starting over when a pull fails
// (the consumer was deleted, say).
func (p *projector) loop(ctx context.Context) {
	for {
		err := p.consume(ctx)
		if ctx.Err() != nil {
			return
		}
		p.log.Error("consuming stopped; starting over", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		rctx, cancel := context.WithTimeout(ctx, p.cfg.StartTimeout)
		err = p.ensureConsumer(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			p.log.Error("recreate consumer", "error", err)
		}
	}
}

// consume reads batches from a fetcher, decodes them and applies up to
// inFlight of them at once, each acked after its own commit. On ctx cancel
// it drains what the fetcher holds and returns nil; it returns only once
// its last pull has ended and every message it received is settled or
// handed back.
//
// The one consume loop that is not worker.Pool's, for a reason: the
// projector writes a batch of events in one transaction, in stream order,
// and wants the next batch buffered while one commits; the Pool hands
// messages one by one to handlers running side by side. A buffer here
// costs nothing a pull for free handlers saves: the projector's messages
// are idempotent writes, and none waits on anything but Postgres.
func (p *projector) consume(ctx context.Context) error {
	// The batches being applied and the next one arrive while they commit;
	// more than the consumer's MaxAckPending would never come.
	pull := min((inFlight+1)*p.cfg.BatchSize, events.ProjectorConsumer().MaxAckPending)
	f := startFetching(ctx, p.cons, pull)
	a := p.newApplier(ctx)
	defer p.settle(f, a)
	var next jetstream.Msg // a message read past the last batch: the next one's first
	for {
		msg := next
		next = nil
		if msg == nil {
			var err error
			msg, err = f.next(ctx, 0)
			if err != nil {
				if ctx.Err() != nil {
					p.drain(f, a)
					return nil
				}
				// The fetcher ended on its own: every message it received
				// was taken.
				return fmt.Errorf("next message: %w", err)
			}
		}
		nextWithin := func(wait time.Duration) (jetstream.Msg, error) { return f.next(context.Background(), wait) }
		msgs := gather(nextWithin, []jetstream.Msg{msg}, p.cfg.BatchSize, time.Now().Add(linger))
		if len(msgs) == p.cfg.BatchSize {
			msgs, next = p.completePayment(f, msgs)
		}
		a.start(func() []item { return p.decode(msgs) })
	}
}

// gather adds to msgs the events next gives, up to size in all, until
// deadline or until none comes within gap.
func gather(next func(wait time.Duration) (jetstream.Msg, error), msgs []jetstream.Msg, size int, deadline time.Time) []jetstream.Msg {
	for len(msgs) < size {
		wait := min(time.Until(deadline), gap)
		if wait <= 0 {
			break
		}
		m, err := next(wait)
		if err != nil {
			break // a timeout; anything worse shows at the next Next
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// paymentTail bounds how many events a full batch takes past BatchSize to
// keep its last payment's events together.
const paymentTail = 8

// completePayment adds to a full batch the events of its last payment that
// are already here (one published right after the other), so that a
// payment's events are not cut in two by the batch size: together they are
// one row version (store.Apply's fold), and cut in two, the next batch,
// applied beside this one, would wait for this one's commit to write that
// row. It returns the batch and the first message of another payment it
// read, if any, which starts the next batch.
func (p *projector) completePayment(f *fetcher, msgs []jetstream.Msg) ([]jetstream.Msg, jetstream.Msg) {
	last := events.TrackingIDOf(msgs[len(msgs)-1].Subject())
	for range paymentTail {
		m, err := f.next(context.Background(), time.Millisecond)
		if err != nil {
			return msgs, nil
		}
		if events.TrackingIDOf(m.Subject()) != last {
			return msgs, m
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// drain applies the messages the fetcher received, and those its last
// pull still gets, for up to DrainTimeout, so that they need not wait out
// the AckWait to be redelivered. What is left then, settle hands back.
func (p *projector) drain(f *fetcher, a *applier) {
	deadline := time.Now().Add(p.cfg.DrainTimeout)
	var msgs []jetstream.Msg
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		m, err := f.next(context.Background(), wait)
		if err != nil {
			break // the fetcher ended and every message was taken, or the deadline
		}
		msgs = append(msgs, m)
		if len(msgs) == p.cfg.BatchSize {
			batch := msgs
			a.start(func() []item { return p.decode(batch) })
			msgs = nil
		}
	}
	if len(msgs) > 0 {
		a.start(func() []item { return p.decode(msgs) })
	}
}

// settle waits for the fetcher's last pull to end and for every batch
// started to be settled, then hands back (worker.HandBack), in stream
// order, what a stop left: the events of the batches it left unapplied and
// those the fetcher received that no batch took (DrainTimeout), so that
// the next projector gets them at once, in the order they came. Not
// before: a message handed back while that pull is open could be sent to
// it again, and be handed back again after later ones; and a message left
// is later in the stream than those of the batches under way.
func (p *projector) settle(f *fetcher, a *applier) {
	rest := f.rest()
	a.wait()
	if len(rest) > 0 {
		p.log.Warn("stopping with events received and not applied (DrainTimeout); handing them back", "events", len(rest), "drain_timeout", p.cfg.DrainTimeout.String())
	}
	p.handBack(append(a.takeBack(), rest...))
}
