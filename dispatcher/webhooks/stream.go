package webhooks

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/webhook"
)

// The delivery tasks: one message per (event, endpoint), published by the
// fan-out with the Nats-Msg-Id "<event id>:<endpoint id>", so that a fan-out
// run again (a crash between publishing and its ack) never makes a second
// task for the same delivery.
const (
	TaskStreamName = webhook.TaskStreamName
	TaskSubjectAll = webhook.TaskSubjectAll
	// TaskDuplicateWindow: a fan-out redelivered within it is dropped as a
	// duplicate; a later one is also harmless for a delivery already made
	// (the worker reads its state first).
	TaskDuplicateWindow = 2 * time.Hour
)

// Durable consumer names.
const (
	ConsumerFanOut  = "webhooks-fanout"
	ConsumerDeliver = "webhooks-deliver"
)

// TaskStreamConfig is the stream of delivery tasks: a work queue (a task is
// removed once acked), file storage. No age or size limit: a limit would
// drop tasks whose deliveries then stay pending for ever. The worker ends
// every task itself (delivered, cancelled, or failed within RetryFor plus
// one wait, an open breaker's too); a task outlives that only while no
// worker runs, and then waits for one. Discard new: should an operator set
// a limit, the fan-out's publish is refused (and retried, the event kept)
// rather than an old task dropped.
func TaskStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        TaskStreamName,
		Description: "stkgate: one webhook delivery task per event and endpoint",
		Subjects:    []string{TaskSubjectAll},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
		Duplicates:  TaskDuplicateWindow,
		Discard:     jetstream.DiscardNew,
	}
}

// FanOutConsumer reads every STK event and makes its deliveries. It starts
// at the events published after it is first created: a new worker does not
// send a merchant the stream's 90 days of history.
func FanOutConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerFanOut,
		Description:   "makes one webhook delivery task per STK event and endpoint",
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: events.SubjectAll,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 1024,
	}
}

// DeliverConsumer hands each task to a delivery. A task waiting for its
// next try (NakWithDelay: the waits are kept by JetStream, not by a
// goroutine) stays ack-pending for up to RetryFor, so MaxAckPending is
// unlimited: a merchant down for a day with many payments must not hold
// back everyone else's deliveries. No BackOff (it would replace the delays
// asked for) and no MaxDeliver: the worker gives up itself, after RetryFor.
func DeliverConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerDeliver,
		Description:   "delivers each webhook task to its endpoint, with retries",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: TaskSubjectAll,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: -1,
	}
}
