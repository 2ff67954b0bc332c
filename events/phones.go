package events

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PhonesBucket is the JetStream key-value bucket where the dispatcher keeps
// one lock per phone number (the key; the value is the tracking id holding
// it). Daraja refuses or garbles a second prompt to a phone that already has
// one open, so a request for a locked phone waits until the holder's outcome
// is final or its prompt has expired.
const PhonesBucket = "STK_PHONES"

// PhonesConfig is the phone-lock bucket. Every write of a lock lives ttl
// (PromptLifetime when ttl <= 0): the holder rewrites it just before each
// push, so a lock whose release was lost lets go a prompt's lifetime after
// the last push that could have opened one.
func PhonesConfig(replicas int, ttl time.Duration) jetstream.KeyValueConfig {
	if ttl <= 0 {
		ttl = PromptLifetime
	}
	return jetstream.KeyValueConfig{
		Bucket:      PhonesBucket,
		Description: "stkgate: the dispatcher's one-open-prompt-per-phone locks",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    atLeastOne(replicas),
	}
}

// Durable name of the dispatcher's consumer of stk.completed.
const ConsumerPhoneRelease = "dispatcher-phones"

// PhoneReleaseConsumer hands every stk.completed to the dispatcher, which
// releases the phone lock the completed payment still holds. It starts at
// new events when first created: older completions hold no lock.
//
// No BackOff (nats-server would make its first interval the AckWait, see
// ProjectorConsumer): the dispatcher naks a failed release with a delay of
// its choosing (PhoneReleaseRetry).
func PhoneReleaseConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerPhoneRelease,
		Description:   "releases a phone's lock when the payment holding it is completed",
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: Subject(TypeCompleted, "*"),
		AckWait:       30 * time.Second,
		// A release that keeps failing is not lost: the lock's TTL lets go.
		MaxDeliver:    20,
		MaxAckPending: 1024,
	}
}

// PhoneReleaseRetry is the wait before the delivery after a release that
// failed n times (n >= 1): 1 s doubling to 30 s.
func PhoneReleaseRetry(n uint64) time.Duration {
	d := time.Second
	for i := uint64(1); i < n && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}
