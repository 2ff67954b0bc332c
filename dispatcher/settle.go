package dispatcher

// Settling a request's message: its events published, the message acked
// or terminated.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
)

// publish stores ev, retrying until it is durable or work ends: a lost
// outcome is worse than a late one. The request is kept in progress
// meanwhile so JetStream does not redeliver it.
func (d *dispatcher) publish(work context.Context, log *slog.Logger, msg jetstream.Msg, ev events.Event) error {
	eb := backoff.NewExponentialBackOff()
	eb.InitialInterval = 500 * time.Millisecond
	eb.MaxInterval = 10 * time.Second
	eb.MaxElapsedTime = 0
	op := func() error {
		_ = msg.InProgress()
		ctx, cancel := context.WithTimeout(work, 10*time.Second)
		defer cancel()
		_, err := d.pub.Publish(ctx, ev)
		return err
	}
	notify := func(err error, wait time.Duration) {
		log.Error("publish failed, retrying", "event", ev.Type(), "retry_in", wait.Round(time.Millisecond).String(), "error", err)
	}
	if err := backoff.RetryNotify(op, backoff.WithContext(eb, work), notify); err != nil {
		return fmt.Errorf("publish %s: %w", ev.Type(), err)
	}
	return nil
}

// ack acknowledges and waits for JetStream to confirm: a lost ack would
// redeliver the request and push the customer again.
func (d *dispatcher) ack(work context.Context, log *slog.Logger, msg jetstream.Msg) {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-work.Done():
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(work), 5*time.Second)
		err = msg.DoubleAck(ctx)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return
		}
	}
	log.Error("ack not confirmed: the request may be redelivered and pushed again", "error", err)
}

func (d *dispatcher) terminate(log *slog.Logger, msg jetstream.Msg, reason string) {
	log.Error("terminating malformed request", "subject", msg.Subject(), "reason", reason)
	d.term(log, msg, "malformed: "+reason)
}

func (d *dispatcher) term(log *slog.Logger, msg jetstream.Msg, reason string) {
	if err := msg.TermWithReason(reason); err != nil {
		log.Error("terminate failed", "error", err)
	}
}
