package events

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerReconcilerConfirm is the durable consumer, on STK_CALLBACKS, of
// the callbacks awaiting confirmation.
const ConsumerReconcilerConfirm = "reconciler-confirm"

// ReconcilerConfirmConsumer hands each callback kept on
// stkcb.confirm.<tracking_id> to the reconciler, which asks Daraja's STK
// query about the payment's push at once and publishes its answer. Same
// timer scheme as ReconcilerDispatchedConsumer: the reconciler naks with
// the delay to its next query, so a restart loses no pending confirmation.
func ReconcilerConfirmConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerReconcilerConfirm,
		Description:   "confirms through Daraja's STK query each success callback that is not trusted as it stands",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: CallbackSubjectConfirm("*"),
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: ReconcilerMaxAckPending,
	}
}
