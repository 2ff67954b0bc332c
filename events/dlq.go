package events

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Poison messages. JetStream announces a message that used up a consumer's
// MaxDeliver, or that a consumer terminated, with an advisory: a core NATS
// message, lost if nobody listens at that moment. The STK_ADVISORIES stream
// listens all the time, so the dead-letter watcher (api/deadletter) can
// be down and still miss nothing; the watcher copies each such message into
// STK_DLQ with why it died.
const (
	AdvisoryStreamName = "STK_ADVISORIES"
	// The advisory subject prefixes, as nats-server v2.15 writes them; the
	// stream name and the consumer name follow.
	AdvisoryMaxDeliveriesPrefix = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
	AdvisoryTerminatedPrefix    = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED"

	DeadLetterStreamName = "STK_DLQ"
	DeadLetterSubjectAll = "stkdlq.>"

	// ConsumerDeadLetter is the dead-letter watcher's durable consumer on
	// STK_ADVISORIES.
	ConsumerDeadLetter = "deadletter"
)

// AdvisorySubjects are the advisories for every consumer of the STK stream.
func AdvisorySubjects() []string {
	return []string{
		AdvisoryMaxDeliveriesPrefix + "." + StreamName + ".*",
		AdvisoryTerminatedPrefix + "." + StreamName + ".*",
	}
}

// DeadLetterSubject is where a message of the STK stream that consumer gave
// up on is kept: stkdlq.<consumer>.<tracking_id>.
func DeadLetterSubject(consumer, trackingID string) string {
	return "stkdlq." + consumer + "." + trackingID
}

// DeadLetterMsgID is a dead letter's Nats-Msg-Id: one per consumer and
// message, however often the advisory is handled.
func DeadLetterMsgID(consumer string, streamSeq uint64) string {
	return "dlq:" + consumer + ":" + strconv.FormatUint(streamSeq, 10)
}

// Why a message was dead-lettered (DeadLetterHeaderReason).
const (
	DeadLetterMaxDeliveries = "max_deliveries"
	DeadLetterTerminated    = "terminated"
)

// Headers of a dead letter; its body is the original message's, byte for
// byte.
const (
	DeadLetterHeaderReason      = "Stkgate-Dlq-Reason"      // DeadLetterMaxDeliveries or DeadLetterTerminated
	DeadLetterHeaderTermReason  = "Stkgate-Dlq-Term-Reason" // what the consumer gave TermWithReason
	DeadLetterHeaderConsumer    = "Stkgate-Dlq-Consumer"
	DeadLetterHeaderStream      = "Stkgate-Dlq-Stream"
	DeadLetterHeaderStreamSeq   = "Stkgate-Dlq-Stream-Seq"
	DeadLetterHeaderDeliveries  = "Stkgate-Dlq-Deliveries"
	DeadLetterHeaderSubject     = "Stkgate-Dlq-Subject"      // the original subject
	DeadLetterHeaderPublishedAt = "Stkgate-Dlq-Published-At" // when the original was stored, RFC 3339 UTC
	DeadLetterHeaderOriginalID  = "Stkgate-Dlq-Original-Msg-Id"
	DeadLetterHeaderAdvisoryAt  = "Stkgate-Dlq-Advisory-At" // when JetStream gave up on it, RFC 3339 UTC
	DeadLetterHeaderMissing     = "Stkgate-Dlq-Original-Missing"
	DeadLetterHeaderTrackingID  = "Stkgate-Tracking-Id"
)

// DeadLetterUnknownTrackingID stands for the tracking id of a dead letter
// whose original message is no longer in the stream.
const DeadLetterUnknownTrackingID = "unknown"

const (
	deadLetterAdvisoryRetention = 30 * 24 * time.Hour
	// deadLetterDuplicateWindow covers an advisory's whole life in
	// STK_ADVISORIES: however late it is handled again (a watcher that
	// lost its consumer starts from the first one kept), its dead letter,
	// first stored after the advisory was, is still remembered. Dead
	// letters are rare, so the ids remembered cost nothing.
	deadLetterDuplicateWindow = deadLetterAdvisoryRetention
	deadLetterRetention       = 365 * 24 * time.Hour
)

// AdvisoryStreamConfig is STK_ADVISORIES: the advisories the dead-letter
// watcher turns into dead letters. They are only its input (STK_DLQ is the
// record), so a month is plenty.
func AdvisoryStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        AdvisoryStreamName,
		Description: "stkgate: JetStream's max-deliveries and terminated advisories for the STK stream",
		Subjects:    AdvisorySubjects(),
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    atLeastOne(replicas),
		Duplicates:  2 * time.Minute,
		MaxAge:      deadLetterAdvisoryRetention,
		Discard:     jetstream.DiscardOld,
	}
}

// DeadLetterStreamConfig is STK_DLQ. A dead letter is an event some service
// could not process, so a payment that may need an operator: it is kept a
// year, and its duplicate window covers any handling of the advisory again.
func DeadLetterStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        DeadLetterStreamName,
		Description: "stkgate: STK messages a consumer gave up on, with why",
		Subjects:    []string{DeadLetterSubjectAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    atLeastOne(replicas),
		Duplicates:  deadLetterDuplicateWindow,
		MaxAge:      deadLetterRetention,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,
	}
}

// EnsureAdvisoryStream creates STK_ADVISORIES or brings it up to date,
// leaving a matching one alone (see EnsureStream). Advisories raised before
// it exists are lost, so every service that consumes STK may call it at
// start-up, before it creates its consumer.
func EnsureAdvisoryStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	return ensureStreamConfig(ctx, js, AdvisoryStreamConfig(replicas))
}

// EnsureDeadLetterStream creates STK_DLQ or brings it up to date, leaving a
// matching one alone.
func EnsureDeadLetterStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	return ensureStreamConfig(ctx, js, DeadLetterStreamConfig(replicas))
}

// DeadLetterConsumer reads STK_ADVISORIES. It never gives up on an
// advisory (MaxDeliver -1: the watcher retries with its own delays), since
// the advisories of this consumer are not captured anywhere.
func DeadLetterConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerDeadLetter,
		Description:   "copies every STK message a consumer gave up on into STK_DLQ",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 256,
	}
}
