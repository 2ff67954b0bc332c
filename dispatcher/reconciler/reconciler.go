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
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
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
	client, err := daraja.New(cfg.Daraja)
	if err != nil {
		return fmt.Errorf("reconciler: daraja client: %w", err)
	}

	nc, err := events.Connect(cfg.NATSURL, "stkgate-reconciler", log)
	if err != nil {
		return fmt.Errorf("reconciler: %w", err)
	}
	defer events.Close(nc, log)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("reconciler: jetstream: %w", err)
	}

	r := &reconciler{
		cfg:    cfg,
		log:    log,
		client: client,
		pub:    &events.Publisher{JS: js, Source: Source},
		js:     js,
	}
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

	// work outlives ctx by ShutdownTimeout, so that a message in hand is
	// settled (acked, or nak'ed for later) rather than left to time out.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopWork := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(cfg.ShutdownTimeout, cancelWork)
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stopWork()

	var g errgroup.Group
	g.Go(func() error { r.consume(ctx, work, dispatched, r.handleDispatched); return nil })
	g.Go(func() error { r.consume(ctx, work, requested, r.handleRequested); return nil })
	g.Go(func() error { r.consume(ctx, work, r.confirmCons, r.handleConfirm); return nil })
	_ = g.Wait()
	log.Info("reconciler stopped")
	return nil
}

type reconciler struct {
	cfg    Config
	log    *slog.Logger
	client *daraja.Client
	pub    *events.Publisher
	stream jetstream.Stream
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
// creates the two consumers, retrying while NATS is not reachable yet so the
// services can start in any order.
func (r *reconciler) setUp(ctx context.Context, js jetstream.JetStream) (dispatched, requested jetstream.Consumer, err error) {
	wait := time.Second
	for {
		err = func() error {
			ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
			defer cancel()
			stream, err := events.EnsureStream(ctx, js, r.cfg.StreamReplicas)
			if err != nil {
				return err
			}
			kv, err := worker.EnsureBucket(ctx, js, events.AttemptsConfig(r.cfg.StreamReplicas))
			if err != nil {
				return err
			}
			pushLog, err := events.EnsurePushLogStream(ctx, js, r.cfg.StreamReplicas)
			if err != nil {
				return err
			}
			// Before the consumers: their MaxDeliver advisories are kept
			// only once STK_ADVISORIES exists.
			if _, err := events.EnsureAdvisoryStream(ctx, js, r.cfg.StreamReplicas); err != nil {
				return err
			}
			d, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, events.ReconcilerDispatchedConsumer())
			if err != nil {
				return fmt.Errorf("create consumer %s: %w", events.ConsumerReconcilerDispatched, err)
			}
			q, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, events.ReconcilerRequestedConsumer())
			if err != nil {
				return fmt.Errorf("create consumer %s: %w", events.ConsumerReconcilerRequested, err)
			}
			callbacks, c, err := r.confirmConsumer(ctx, js)
			if err != nil {
				return err
			}
			r.stream, r.pushLog, r.callbacks, r.kv, r.confirmCons, dispatched, requested = stream, pushLog, callbacks, kv, c, d, q
			return nil
		}()
		if err == nil {
			return dispatched, requested, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if !retryableSetUp(err) {
			return nil, nil, fmt.Errorf("reconciler: %w", err)
		}
		r.log.Warn("jetstream not ready, retrying", "error", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// retryableSetUp reports whether a start-up failure may pass by itself (NATS
// or JetStream not there yet) rather than being a configuration error.
func retryableSetUp(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// The server answered and refused: waiting will not help, except
		// while JetStream is still starting or electing a leader.
		return apiErr.Code == 503 || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
	}
	return true
}

// handler settles one message: ack, nak with a delay, or term.
type handler func(work context.Context, log *slog.Logger, msg jetstream.Msg)

// consume runs Concurrency workers that fetch one message at a time until
// stop is cancelled.
func (r *reconciler) consume(stop, work context.Context, cons jetstream.Consumer, h handler) {
	name := cons.CachedInfo().Name
	var wg sync.WaitGroup
	for range r.cfg.Concurrency {
		wg.Go(func() {
			for stop.Err() == nil {
				// The pull ends with stop, so no message is taken on after it.
				fctx, cancel := context.WithTimeout(stop, fetchWait)
				batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
				if err != nil {
					cancel()
					if stop.Err() == nil {
						r.log.Warn("fetch failed", "consumer", name, "error", err)
						sleep(stop, time.Second)
					}
					continue
				}
				for msg := range batch.Messages() {
					if stop.Err() != nil {
						// Taken as the reconciler stopped: hand it back to
						// another instance.
						_ = events.HandBack(msg)
						continue
					}
					r.handle(work, msg, h)
				}
				cancel()
				if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) &&
					!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && stop.Err() == nil {
					r.log.Warn("fetch failed", "consumer", name, "error", err)
					sleep(stop, time.Second)
				}
			}
		})
	}
	wg.Wait()
}

func (r *reconciler) handle(work context.Context, msg jetstream.Msg, h handler) {
	id := events.TrackingIDOf(msg.Subject())
	log := r.log.With("tracking_id", id)
	keep := keepInProgress(msg, r.cfg.ProgressInterval)
	defer keep()
	h(work, log, msg)
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

// ack acknowledges and waits for JetStream's confirmation; a lost ack only
// means one more (harmless) check later.
func ack(work context.Context, log *slog.Logger, msg jetstream.Msg) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(work), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(ctx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		log.Warn("ack not confirmed: the payment will be checked again", "error", err)
	}
}

// later naks msg for redelivery after delay: the reconciler's timer.
func later(log *slog.Logger, msg jetstream.Msg, delay time.Duration) {
	delay = max(delay, 10*time.Millisecond)
	if err := msg.NakWithDelay(delay); err != nil {
		// Unacked, it comes back after AckWait anyway.
		log.Warn("nak failed", "error", err)
	}
}

func term(log *slog.Logger, msg jetstream.Msg, reason string) {
	log.Error("terminating malformed event", "subject", msg.Subject(), "reason", reason)
	if err := msg.TermWithReason("malformed: " + reason); err != nil {
		log.Error("terminate failed", "error", err)
	}
}

// numDelivered is how many times msg was delivered (1 on the first).
func numDelivered(msg jetstream.Msg) uint64 {
	meta, err := msg.Metadata()
	if err != nil || meta.NumDelivered == 0 {
		return 1
	}
	return meta.NumDelivered
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

// keepInProgress reports msg in progress every interval until the returned
// function is called, so JetStream does not hand it to another instance
// while this one is still on it.
func keepInProgress(msg jetstream.Msg, every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
