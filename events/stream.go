package events

import (
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The stream every event lives in.
const (
	StreamName = "STK"
	SubjectAll = "stk.>"
)

// RequestRetention is how long the STK stream keeps events, a request
// among them; whatever must be known of a request while it may be delivered
// again (its attempt record, its pushes) is kept as long.
const RequestRetention = 90 * 24 * time.Hour

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id: a publish
// retried within it is dropped, so an event is stored once per tracking id.
// It outlasts every retry loop of the services and a prompt's lifetime.
const DuplicateWindow = time.Hour

// StreamConfig is the STK stream: every event, file storage, replicas from
// configuration (1 in dev, 3 in a cluster).
func StreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "stkgate: every STK push event",
		Subjects:    []string{SubjectAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    atLeastOne(replicas),
		Duplicates:  DuplicateWindow,
		MaxAge:      RequestRetention,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,
	}
}

// EnsureStream creates the STK stream or brings it up to date. Every service
// calls it at start-up, so none depends on another having started first.
//
// A stream whose configuration already matches is left alone: an update is
// not free (it raises an advisory), and nats-server v2.15 races when a stream
// update meets a consumer being created by another service starting at the
// same moment.
func EnsureStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	return ensureStreamConfig(ctx, js, StreamConfig(replicas))
}

// streamMatches compares the settings StreamConfig makes; the server fills in
// the rest.
func streamMatches(got, want jetstream.StreamConfig) bool {
	return slices.Equal(got.Subjects, want.Subjects) &&
		got.Description == want.Description &&
		got.Retention == want.Retention &&
		got.Storage == want.Storage &&
		got.Replicas == want.Replicas &&
		got.Duplicates == want.Duplicates &&
		got.MaxAge == want.MaxAge &&
		got.Discard == want.Discard &&
		got.AllowDirect == want.AllowDirect &&
		perSubjectLimit(got.MaxMsgsPerSubject) == perSubjectLimit(want.MaxMsgsPerSubject)
}

// perSubjectLimit reads 0, as sent, like the server's "no limit", -1.
func perSubjectLimit(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Durable consumer names.
const (
	ConsumerProjector  = "projector"
	ConsumerDispatcher = "dispatcher"
)

// ProjectorConsumer reads every event into the Postgres read model. It acks
// after commit.
//
// It has no BackOff: nats-server replaces the AckWait by the first BackOff
// interval (1 s had been asked for, so a batch slower than a second was
// delivered again), and measures a NakWithDelay against the BackOff instead
// of the delay asked for. The projector spaces its own retries (it holds a
// batch with InProgress while the database is away), and MaxDeliver is
// unlimited: no outage, however long, and no crash loop during one may
// skip an event. An event that can never be applied is terminated by the
// projector itself (and dead-lettered).
func ProjectorConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerProjector,
		Description:   "writes every STK event into the Postgres read model",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: SubjectAll,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 4096,
	}
}

// DispatcherConsumer hands each stk.requested to the dispatcher. Its handler
// calls InProgress while it waits on Daraja, so the ack wait bounds only a
// dispatcher that stopped answering.
//
// Requests wait for their phone (one open prompt per phone) by
// NakWithDelay: every wait is a delivery, and a phone may be busy for
// several prompts' lifetimes, so MaxDeliver is large
// (DispatcherMaxDeliver), and the waiting requests stay ack-pending, so
// MaxAckPending holds every waiting request plus those being pushed.
//
// It has no BackOff: nats-server times a NakWithDelay from the BackOff
// interval of the delivery count (a wait of a few seconds would become 30 s,
// then minutes), and the attempt record, not spacing, is what makes a
// redelivery after a crash safe. A redelivery comes after AckWait.
func DispatcherConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerDispatcher,
		Description:   "sends an STK push to Daraja for each stk.requested",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: Subject(TypeRequested, "*"),
		AckWait:       30 * time.Second,
		MaxDeliver:    DispatcherMaxDeliver,
		MaxAckPending: 10000,
	}
}

// DispatcherMaxDeliver is the dispatcher consumer's MaxDeliver. The
// dispatcher finishes a request still waiting for its phone at its last
// delivery as failed, so it never runs out silently.
const DispatcherMaxDeliver = 1000
