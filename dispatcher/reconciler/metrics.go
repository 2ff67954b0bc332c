package reconciler

import (
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/metrics"
)

// Backlog reasons: what the payments each reconciler consumer holds wait
// for.
const (
	BacklogAwaitingOutcome      = "awaiting_outcome"      // pushed; no outcome yet
	BacklogAwaitingDispatch     = "awaiting_dispatch"     // requested; not pushed yet
	BacklogAwaitingConfirmation = "awaiting_confirmation" // a callback to confirm by query
)

// watchMetrics counts the reconciler's publishes and reports its
// consumers, and its backlog by reason, on each scrape.
func (r *reconciler) watchMetrics(js jetstream.JetStream) {
	m := r.cfg.Metrics
	if m == nil {
		return
	}
	r.pub.Metrics = m
	m.WatchConsumers(js,
		metrics.Watch{Stream: events.StreamName, Consumer: events.ConsumerReconcilerDispatched, BacklogReason: BacklogAwaitingOutcome},
		metrics.Watch{Stream: events.StreamName, Consumer: events.ConsumerReconcilerRequested, BacklogReason: BacklogAwaitingDispatch},
		metrics.Watch{Stream: events.CallbackStreamName, Consumer: events.ConsumerReconcilerConfirm, BacklogReason: BacklogAwaitingConfirmation})
}
