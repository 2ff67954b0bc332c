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
//     (worker.HandBack) to the next one.
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
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
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
// Config.BatchSize. Under load the events wait in the iterator's buffer
// while batches are written, so batches fill without waiting; at a few
// hundred events a second, a batch that waited out the whole linger for
// more would add its 5 ms to every event's time to the read model, for a
// handful of events more per transaction.
const (
	linger = 5 * time.Millisecond
	gap    = 200 * time.Microsecond
)

// Run projects events until ctx is cancelled; then it applies and acks the
// events it already holds (for up to DrainTimeout) and returns nil. It
// returns an error if it cannot start within StartTimeout.
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

	nc, err := events.Connect(cfg.NATSURL, "stkgate-projector", log)
	if err != nil {
		return err
	}
	// Acks are sent asynchronously: Close flushes them first.
	defer events.Close(nc, log)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

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

// loop consumes until ctx is cancelled, starting over when the message
// iterator breaks (the consumer was deleted, say).
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

// inFlight is how many batches are applied side by side: while one
// commits (an fsync), the next is gathered, decoded and written. Only
// batches that share no payment, CheckoutRequestID or receipt go side by
// side (applier.start): they write different rows and different unique
// keys, so the order they commit in changes nothing; a batch that shares
// one with a batch under way waits for it, so that every payment's events
// are applied in stream order as by one batch after the other.
const inFlight = 4

// consume reads batches from one message iterator, decodes them and
// applies up to inFlight of them at once, each acked after its own commit.
// On ctx cancel it drains what the iterator already holds and returns nil;
// it returns only once every batch it started is settled.
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
	it, err := p.cons.Messages(jetstream.PullMaxMessages(pull))
	if err != nil {
		return fmt.Errorf("messages: %w", err)
	}
	defer it.Stop()
	a := p.newApplier(ctx)
	defer a.wait()
	var next jetstream.Msg // a message read past the last batch: the next one's first
	for {
		msg := next
		next = nil
		if msg == nil {
			msg, err = it.Next(jetstream.NextContext(ctx))
			if err != nil {
				if ctx.Err() != nil {
					p.drain(it, a)
					return nil
				}
				return fmt.Errorf("next message: %w", err)
			}
		}
		nextWithin := func(wait time.Duration) (jetstream.Msg, error) { return it.Next(jetstream.NextMaxWait(wait)) }
		msgs := gather(nextWithin, []jetstream.Msg{msg}, p.cfg.BatchSize, time.Now().Add(linger))
		if len(msgs) == p.cfg.BatchSize {
			msgs, next = p.completePayment(it, msgs)
		}
		a.start(p.decode(msgs))
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
func (p *projector) completePayment(it jetstream.MessagesContext, msgs []jetstream.Msg) ([]jetstream.Msg, jetstream.Msg) {
	last := events.TrackingIDOf(msgs[len(msgs)-1].Subject())
	for range paymentTail {
		m, err := it.Next(jetstream.NextMaxWait(time.Millisecond))
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

// applier applies batches, up to inFlight at once. Only consume's
// goroutine starts batches.
type applier struct {
	// handle applies and settles a batch (projector.handle).
	handle func(context.Context, []item)
	ctx    context.Context
	slots  chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	flights map[*flight]bool // the batches under way
}

// flight is a batch under way: what it writes (batchKeys), and done,
// closed once it is settled.
type flight struct {
	keys map[batchKey]bool
	done chan struct{}
}

func (p *projector) newApplier(ctx context.Context) *applier {
	return &applier{handle: p.handle, ctx: ctx, slots: make(chan struct{}, inFlight), flights: map[*flight]bool{}}
}

// start applies items beside the batches under way, once fewer than
// inFlight are and once every one that shares a key with items (a
// payment, a CheckoutRequestID, a receipt) is settled: those came first in
// the stream, and are applied first.
func (a *applier) start(items []item) {
	if len(items) == 0 {
		return
	}
	f := &flight{keys: batchKeys(items), done: make(chan struct{})}
	// No batch starts meanwhile: only this goroutine starts them.
	for _, g := range a.before(f.keys) {
		<-g.done
	}
	a.slots <- struct{}{}
	a.mu.Lock()
	a.flights[f] = true
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.handle(a.ctx, items)
		a.mu.Lock()
		delete(a.flights, f)
		a.mu.Unlock()
		close(f.done)
		<-a.slots
	}()
}

// before is the batches under way that share one of keys.
func (a *applier) before(keys map[batchKey]bool) []*flight {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*flight
	for g := range a.flights {
		if g.shares(keys) {
			out = append(out, g)
		}
	}
	return out
}

// wait returns once every batch started is settled.
func (a *applier) wait() { a.wg.Wait() }

func (f *flight) shares(keys map[batchKey]bool) bool {
	small, big := f.keys, keys
	if len(small) > len(big) {
		small, big = big, small
	}
	for k := range small {
		if big[k] {
			return true
		}
	}
	return false
}

// batchKeys are the rows and unique keys a batch may write: its tracking
// ids (as store.Apply writes them), CheckoutRequestIDs and receipts as
// store.Apply writes them (cleaned: store.Normalize) and the read model's
// unique indexes compare them (a receipt in upper case). A key taken as
// sent, uncleaned, would let two batches that write one CheckoutRequestID
// go side by side, and the later in the stream could take it first.
func batchKeys(items []item) map[batchKey]bool {
	keys := make(map[batchKey]bool, len(items))
	for _, it := range items {
		ev := it.ev
		keys[batchKey{'t', store.Canonical(ev.Base().TrackingID)}] = true
		var co, receipt string
		switch e := ev.(type) {
		case events.Dispatched:
			co = e.CheckoutRequestID
		case events.Completed:
			co, receipt = e.CheckoutRequestID, e.Receipt
		case events.LateResult:
			co, receipt = e.CheckoutRequestID, e.Receipt
		}
		// As store.Normalize cleans them (its cleanWord).
		if co = events.CleanText(co, 0); co != "" {
			keys[batchKey{'c', co}] = true
		}
		if receipt = events.CleanText(receipt, 0); receipt != "" {
			keys[batchKey{'r', strings.ToUpper(receipt)}] = true
		}
	}
	return keys
}

// batchKey is a key of batchKeys: a tracking id ('t'), a
// CheckoutRequestID ('c') or a receipt ('r').
type batchKey struct {
	kind byte
	text string
}

// drain applies the messages the iterator already received, so that they
// need not wait out the AckWait to be redelivered.
func (p *projector) drain(it jetstream.MessagesContext, a *applier) {
	it.Drain()
	deadline := time.Now().Add(p.cfg.DrainTimeout)
	var msgs []jetstream.Msg
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		m, err := it.Next(jetstream.NextMaxWait(wait))
		if err != nil {
			break // ErrMsgIteratorClosed: the buffer is empty
		}
		msgs = append(msgs, m)
		if len(msgs) == p.cfg.BatchSize {
			a.start(p.decode(msgs))
			msgs = nil
		}
	}
	if len(msgs) > 0 {
		a.start(p.decode(msgs))
	}
}

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

// handle applies one decoded batch and settles every message in it: acked
// after commit, terminated if it can never be applied, or (only when ctx
// is cancelled during a database outage) nak'ed for another projector.
func (p *projector) handle(ctx context.Context, items []item) {
	defer p.traceBatch(items)()

	err := p.apply(ctx, items)
	switch {
	case err == nil:
		p.ackAll(items)
		p.observe(items)
		return
	case !store.IsPermanent(err):
		p.nakAll(items, err)
		return
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
			p.nakAll(items[i:], err)
			return
		}
	}
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

func (p *projector) nakAll(items []item, cause error) {
	p.log.Warn("stopping with events not applied; handing them back", "events", len(items), "error", cause)
	// worker.HandBack, not a plain Nak: a plain Nak is delivered at once to
	// the first pull request waiting, which at a stop is often this
	// projector's own, and the message would then wait out the AckWait
	// (30 s). The consumer has no BackOff (events.ProjectorConsumer), so
	// HandBack's delay is the one nats-server applies.
	for _, it := range items {
		if err := worker.HandBack(it.msg); err != nil {
			p.log.Warn("nak failed", "tracking_id", it.trackingID(), "error", err)
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
