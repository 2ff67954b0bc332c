package events

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Durable consumer names of the reconciler.
const (
	ConsumerReconcilerDispatched = "reconciler-dispatched"
	ConsumerReconcilerRequested  = "reconciler-requested"
)

// ReconcilerMaxAckPending bounds each reconciler consumer's messages that are
// delivered and not yet acked. A message the reconciler is waiting on (a push
// whose callback may still come) stays pending until its timer fires, so the
// bound must exceed the payments accepted within RECONCILE_AFTER; past it,
// JetStream holds back new messages (late, never lost) until some are acked.
const ReconcilerMaxAckPending = 20000

// ReconcilerDispatchedConsumer hands each stk.dispatched to the reconciler,
// which acks it once stk.completed is in the stream and otherwise naks it with
// a delay: the redeliveries are its timer, kept by JetStream so that a restart
// loses none and several instances share them. Hence no MaxDeliver and no
// BackOff: the reconciler chooses every delay itself.
func ReconcilerDispatchedConsumer() jetstream.ConsumerConfig {
	return reconcilerConsumer(ConsumerReconcilerDispatched, TypeDispatched,
		"asks Daraja's STK query for each dispatched push whose callback does not come")
}

// ReconcilerRequestedConsumer hands each stk.requested to the reconciler,
// which finishes as Failed a request that never got a CheckoutRequestID by
// its deadline. Same timer scheme as ReconcilerDispatchedConsumer.
func ReconcilerRequestedConsumer() jetstream.ConsumerConfig {
	return reconcilerConsumer(ConsumerReconcilerRequested, TypeRequested,
		"finishes each request that never got a CheckoutRequestID")
}

func reconcilerConsumer(name, typ, desc string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   desc,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: Subject(typ, "*"),
		// The handler reports progress while it queries Daraja; the wait
		// bounds only an instance that stopped answering.
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: ReconcilerMaxAckPending,
	}
}
