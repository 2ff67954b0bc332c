// Package worker is the plumbing every stkgate service that works off
// JetStream shares, written once: start-up steps retried while their servers
// come up (RetryStart), key-value buckets opened or created (EnsureBucket),
// and the settling of a message (Ack, Nak, Term).
//
// It sits below the contract (package events): it knows JetStream, not
// payments.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
)

// Start-up retries: the first wait and the longest. A service started
// before NATS or Postgres finds them within StartMaxWait of their coming up.
const (
	StartFirstWait = 200 * time.Millisecond
	StartMaxWait   = 5 * time.Second
	// StartStepTimeout bounds one try of a step: a server that accepted the
	// connection and never answers must not hold start-up for good.
	StartStepTimeout = 30 * time.Second
)

// firstWait is StartFirstWait, shortened by tests.
var firstWait = StartFirstWait

// RetryStart runs a start-up step until it succeeds, fails for good, or ctx
// ends: the database or NATS may come up after the service. A step fails for
// good when it returns backoff.Permanent(err) or when JetStream answered and
// refused (Refused). Each try gets StartStepTimeout; each failure that will
// be tried again is logged as a warning with the wait. The error names the
// step (what) and wraps its last failure.
func RetryStart[T any](ctx context.Context, log *slog.Logger, what string, step func(context.Context) (T, error)) (T, error) {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(firstWait),
		backoff.WithMaxInterval(StartMaxWait),
		backoff.WithMaxElapsedTime(0),
	)
	var last error
	v, err := backoff.RetryNotifyWithData(func() (T, error) {
		tctx, cancel := context.WithTimeout(ctx, StartStepTimeout)
		defer cancel()
		v, err := step(tctx)
		last = err
		if err != nil && Refused(err) {
			return v, backoff.Permanent(err)
		}
		return v, err
	}, backoff.WithContext(b, ctx), func(err error, wait time.Duration) {
		log.Warn(what+" failed; retrying", "error", err, "retry_in", wait.Round(time.Millisecond).String())
	})
	switch {
	case err == nil:
		return v, nil
	case ctx.Err() != nil && last != nil && !errors.Is(last, ctx.Err()):
		// Stopped while failing: the failure says why it had not started.
		return v, fmt.Errorf("%s: %w (stopped: %w)", what, last, ctx.Err())
	default:
		return v, fmt.Errorf("%s: %w", what, err)
	}
}

// errCodeReplicasNotSupported is nats-server's JSStreamReplicasNotSupportedErr
// (HTTP-like code 500): more than one replica asked of a server that is not
// in a cluster.
const errCodeReplicasNotSupported jetstream.ErrorCode = 10074

// Refused reports whether err is JetStream's answer that no wait will mend:
// the server understood the request and refused it (a configuration that
// clashes with the stream's, a name not allowed). JetStream not enabled yet
// (a cluster still forming) and the server's own failures (5xx: no leader
// yet; nats-server has been seen to fail consumer updates with a 500 until
// it restarted, while the consumer ran on) may pass, as may every error that
// is not an answer (no connection, a timeout). So may a stream or consumer
// not found: another service may be creating it, or a chaos test deleted it.
func Refused(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch {
	case apiErr.ErrorCode == errCodeReplicasNotSupported:
		// A 500, yet the configuration's fault: no wait adds servers.
		return true
	case apiErr.Code >= 500,
		apiErr.ErrorCode == jetstream.JSErrCodeJetStreamNotEnabled,
		errors.Is(err, jetstream.ErrStreamNotFound),
		errors.Is(err, jetstream.ErrConsumerNotFound):
		return false
	}
	return true
}

// EnsureBucket opens a key-value bucket, creating it as cfg says when it is
// missing. An existing bucket is left as it is: updating its stream races
// with consumers being created by services starting at the same moment, and
// another service may have created it first (its creation then wins).
func EnsureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// AckTimeout bounds the wait for JetStream's confirmation of an ack.
const AckTimeout = 5 * time.Second

// Ack acknowledges msg and waits for JetStream's confirmation, for up to
// AckTimeout even when ctx has ended (the work is done; its ack should not
// be lost to a shutdown). A lost ack only means msg comes back once more,
// so a failure is logged, with what that redelivery means (again: "the
// payment will be checked again"), and not returned.
func Ack(ctx context.Context, log *slog.Logger, msg jetstream.Msg, again string) {
	AckLazy(ctx, func() *slog.Logger { return log }, msg, again)
}

// AckLazy is Ack with a logger built only when there is something to log:
// for a handler whose per-message logger (slog.Logger.With) would cost
// more than the rest of its common path.
func AckLazy(ctx context.Context, log func() *slog.Logger, msg jetstream.Msg, again string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), AckTimeout)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		log().Warn("ack not confirmed: "+again, "error", err)
	}
}

// MinNakDelay is the shortest delay Nak asks for: a nak without delay is
// redelivered at once, a busy loop when the cause has not passed.
const MinNakDelay = 10 * time.Millisecond

// Nak hands msg back for redelivery after delay (at least MinNakDelay). A
// failed nak is logged: unacked, msg comes back after its AckWait anyway.
func Nak(log *slog.Logger, msg jetstream.Msg, delay time.Duration) {
	NakLazy(func() *slog.Logger { return log }, msg, delay)
}

// NakLazy is Nak with a logger built only when the nak fails (AckLazy).
func NakLazy(log func() *slog.Logger, msg jetstream.Msg, delay time.Duration) {
	if err := msg.NakWithDelay(max(delay, MinNakDelay)); err != nil {
		log().Warn("nak failed: the message comes back after its ack wait", "error", err)
	}
}

// Term stops msg's redeliveries for good, giving JetStream the reason (kept
// in its advisory), and logs it as an error: a message no delivery can
// handle is a fault to look at.
func Term(log *slog.Logger, msg jetstream.Msg, reason string) {
	log.Error("message terminated", "subject", msg.Subject(), "reason", reason)
	if err := msg.TermWithReason(reason); err != nil {
		log.Error("terminate failed", "subject", msg.Subject(), "error", err)
	}
}

// Delivered is how many times msg was delivered (1 on the first, and when
// its metadata cannot be read).
func Delivered(msg jetstream.Msg) uint64 {
	meta, err := msg.Metadata()
	if err != nil || meta.NumDelivered == 0 {
		return 1
	}
	return meta.NumDelivered
}
