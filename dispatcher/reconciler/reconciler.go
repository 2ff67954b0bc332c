// Package reconciler makes every accepted payment reach a final state.
//
// Safaricom sends each callback once and never retries it, and the answer to
// a push can be lost on the way back. The reconciler follows every
// stk.dispatched event and, when no stk.completed has come RECONCILE_AFTER
// after the push, asks Daraja's STK query and publishes the outcome as
// stk.completed with source "query". It follows every stk.requested event
// too, and finishes a request that never got a CheckoutRequestID: an
// ambiguous push (its answer lost) as Unknown once the prompt's lifetime has
// passed without a callback applied (a callback kept but not applied yet is
// waited for, up to the request deadline), and a request that was never
// pushed as Failed after its deadline.
//
// Its timers are the redeliveries of two durable JetStream consumers (each
// message is nak'ed with the delay to its next check), so a restart loses
// none and several instances share the work: JetStream hands each message to
// one instance at a time, and every publish carries the event's Nats-Msg-Id,
// so an outcome published twice (by two instances, or by the reconciler and
// callback-ingest at the same moment) is stored once.
package reconciler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/tracing"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// Source is the CloudEvents source of every event the reconciler publishes.
const Source = "stkgate/reconciler"

// Result codes of the outcomes the reconciler decides itself (Daraja gave
// none). Each reads as Failed, but CodeNoAnswer (Unknown).
const (
	// CodeUnknownTransaction: Daraja still answered "The transaction does
	// not Exist" for the CheckoutRequestID UnknownDeadline after the push.
	CodeUnknownTransaction = "stkgate.unknown_transaction"
	// CodeNoAnswer: the push may have reached the customer but Daraja's
	// answer was lost (no CheckoutRequestID to query) and no callback came
	// within the prompt's lifetime. It reads as Unknown, not Failed.
	CodeNoAnswer = events.CodeNoAnswer
	// CodeNotDispatched: no push was accepted by Daraja before the request's
	// deadline (still queued, still retried, or never taken by a dispatcher).
	CodeNotDispatched = "stkgate.not_dispatched"
)

// fetchWait bounds one pull request, so a stop is noticed promptly.
const fetchWait = 2 * time.Second

// lookupTimeout bounds each read of the stream or the attempts bucket and
// each publish.
const lookupTimeout = 10 * time.Second

// Run reconciles until ctx is cancelled, then stops taking messages, lets
// the ones in hand finish (for at most ShutdownTimeout) and returns nil. It
// returns an error only when it cannot start.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return fmt.Errorf("reconciler: %w", err)
	}
	log := cfg.Logger
	cfg.Daraja.Metrics = cmp.Or(cfg.Daraja.Metrics, cfg.Metrics)
	tp, stopTracing := tracing.Start(cfg.Tracing, log)
	defer stopTracing()
	cfg.Daraja.Tracer = tracing.Tracer(tp)
	client, err := daraja.New(cfg.Daraja)
	if err != nil {
		return fmt.Errorf("reconciler: daraja client: %w", err)
	}

	nc, js, err := events.ConnectJetStream(cfg.NATSURL, "stkgate-reconciler", log)
	if err != nil {
		return fmt.Errorf("reconciler: %w", err)
	}
	defer events.Close(nc, log)

	r := &reconciler{
		cfg: cfg,
		log: log,
		pub: &events.Publisher{JS: js, Source: Source},
		js:  js,
	}
	r.pub.Tracer = cfg.Daraja.Tracer
	r.queries = newQueries(client.Query, cfg.QueryInterval, cfg.QueryMaxInterval, r.clock)
	r.watchMetrics(js)
	dispatched, requested, err := r.setUp(ctx, js)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if cfg.PromptLifetime < events.PromptLifetime {
		log.Warn("prompt lifetime shorter than a real prompt's: a late callback from Daraja would find its payment failed; for simulators only",
			"prompt_lifetime", cfg.PromptLifetime.String(), "real", events.PromptLifetime.String())
	}
	log.Info("reconciler started", "reconcile_after", cfg.ReconcileAfter.String(),
		"unknown_deadline", cfg.UnknownDeadline.String(), "request_deadline", cfg.RequestDeadline.String())

	// Each pool gives the messages in hand up to ShutdownTimeout after ctx
	// ends to be settled (acked, or nak'ed for later) rather than left to
	// time out.
	recreate := func(cc jetstream.ConsumerConfig) func(context.Context) (jetstream.Consumer, error) {
		return func(ctx context.Context) (jetstream.Consumer, error) { return r.createConsumer(ctx, cc) }
	}
	var g errgroup.Group
	g.Go(func() error {
		r.pool(ctx, dispatched, recreate(events.ReconcilerDispatchedConsumer()), r.handleDispatched)
		return nil
	})
	g.Go(func() error {
		r.pool(ctx, requested, recreate(events.ReconcilerRequestedConsumer()), r.handleRequested)
		return nil
	})
	g.Go(func() error {
		r.pool(ctx, r.confirmCons, func(ctx context.Context) (jetstream.Consumer, error) {
			_, c, err := r.confirmConsumer(ctx, js)
			return c, err
		}, r.handleConfirm)
		return nil
	})
	_ = g.Wait()
	log.Info("reconciler stopped")
	return nil
}

type reconciler struct {
	cfg Config
	log *slog.Logger
	// queries asks Daraja's STK query, one answer per CheckoutRequestID
	// shared by every asker (queries.go).
	queries *queries
	pub     *events.Publisher
	stream  jetstream.Stream
	// pushLog is the dispatcher's STK_PUSHES.
	pushLog jetstream.Stream
	// callbacks is STK_CALLBACKS, callback-ingest's kept callbacks.
	callbacks jetstream.Stream
	kv        jetstream.KeyValue
	js        jetstream.JetStream
	// confirmCons hands over the callbacks awaiting confirmation.
	confirmCons jetstream.Consumer
	now         func() time.Time // nil: time.Now

	mu     sync.Mutex
	phones jetstream.KeyValue // opened on first use
}

func (r *reconciler) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// setUp creates the stream, finds (or creates) the attempts bucket and
// creates the consumers, retrying while NATS is not reachable yet so the
// services can start in any order (worker.RetryStart).
func (r *reconciler) setUp(ctx context.Context, js jetstream.JetStream) (dispatched, requested jetstream.Consumer, err error) {
	_, err = worker.RetryStart(ctx, r.log, "reconciler set-up", func(ctx context.Context) (struct{}, error) {
		stream, err := events.EnsureStream(ctx, js, r.cfg.StreamReplicas)
		if err != nil {
			return struct{}{}, err
		}
		kv, err := worker.EnsureBucket(ctx, js, events.AttemptsConfig(r.cfg.StreamReplicas))
		if err != nil {
			return struct{}{}, err
		}
		pushLog, err := events.EnsurePushLogStream(ctx, js, r.cfg.StreamReplicas)
		if err != nil {
			return struct{}{}, err
		}
		// Before the consumers: their MaxDeliver advisories are kept
		// only once STK_ADVISORIES exists.
		if _, err := events.EnsureAdvisoryStream(ctx, js, r.cfg.StreamReplicas); err != nil {
			return struct{}{}, err
		}
		d, err := r.createConsumer(ctx, events.ReconcilerDispatchedConsumer())
		if err != nil {
			return struct{}{}, err
		}
		q, err := r.createConsumer(ctx, events.ReconcilerRequestedConsumer())
		if err != nil {
			return struct{}{}, err
		}
		callbacks, c, err := r.confirmConsumer(ctx, js)
		if err != nil {
			return struct{}{}, err
		}
		r.stream, r.pushLog, r.callbacks, r.kv, r.confirmCons, dispatched, requested = stream, pushLog, callbacks, kv, c, d, q
		return struct{}{}, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reconciler: %w", err)
	}
	return dispatched, requested, nil
}

// createConsumer creates (or brings up to date) a consumer of the STK
// stream.
func (r *reconciler) createConsumer(ctx context.Context, cc jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := r.js.CreateOrUpdateConsumer(ctx, events.StreamName, cc)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", cc.Durable, err)
	}
	return c, nil
}

// handler settles one message: ack, nak with a delay, or term.
type handler func(work context.Context, log *slog.Logger, msg jetstream.Msg)

// pool consumes cons with Concurrency handlers of h, each message's log
// lines carrying its tracking id; a deleted consumer is created again with
// recreate.
func (r *reconciler) pool(stop context.Context, cons jetstream.Consumer, recreate func(context.Context) (jetstream.Consumer, error), h handler) {
	worker.Pool{
		Name:            cons.CachedInfo().Name,
		Tracer:          r.cfg.Daraja.Tracer,
		Concurrency:     r.cfg.Concurrency,
		FetchWait:       fetchWait,
		ProgressEvery:   r.cfg.ProgressInterval,
		ShutdownTimeout: r.cfg.ShutdownTimeout,
		Recreate:        recreate,
		Log:             r.log,
		Metrics:         r.cfg.Metrics,
	}.Run(stop, cons, func(_, work context.Context, msg jetstream.Msg) {
		h(work, tracing.Logger(r.log.With("tracking_id", events.TrackingIDOf(msg.Subject())), work), msg)
	})
}

// completed reports whether stk.completed for id is in the stream.
func (r *reconciler) completed(ctx context.Context, id string) (bool, error) {
	return r.exists(ctx, events.Subject(events.TypeCompleted, id))
}

func (r *reconciler) exists(ctx context.Context, subject string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	_, err := r.stream.GetLastMsgForSubject(ctx, subject)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, fmt.Errorf("look up %s: %w", subject, err)
}

// publish stores a final outcome. A duplicate (the same outcome, or another
// one for the same payment published first within the duplicate window) is
// a success: the first final outcome stands.
func (r *reconciler) publish(ctx context.Context, ev events.Completed) (duplicate bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	ack, err := r.pub.Publish(ctx, ev)
	if err != nil {
		return false, err
	}
	return ack.Duplicate, nil
}

// ack, later and term settle a message the reconciler's way (worker's
// helpers): a lost ack means one more check; a nak is its timer; a term is
// for an event no delivery can read.
func ack(work context.Context, log *slog.Logger, msg jetstream.Msg) {
	worker.Ack(work, log, msg, "the payment will be checked again")
}

func later(log *slog.Logger, msg jetstream.Msg, delay time.Duration) { worker.Nak(log, msg, delay) }

func term(log *slog.Logger, msg jetstream.Msg, reason string) {
	worker.Term(log, msg, "malformed: "+reason)
}

// storedAt is when JetStream stored msg: the server's clock, the same for
// every instance, unlike the publisher's.
func storedAt(msg jetstream.Msg, fallback time.Time) time.Time {
	meta, err := msg.Metadata()
	if err != nil || meta.Timestamp.IsZero() {
		return fallback
	}
	return meta.Timestamp
}
