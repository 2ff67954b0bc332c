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
	if replicas < 1 {
		replicas = 1
	}
	if ttl <= 0 {
		ttl = PromptLifetime
	}
	return jetstream.KeyValueConfig{
		Bucket:      PhonesBucket,
		Description: "stkgate: the dispatcher's one-open-prompt-per-phone locks",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// Durable name of the dispatcher's consumer of stk.completed.
const ConsumerPhoneRelease = "dispatcher-phones"

// PhoneReleaseConsumer hands every stk.completed to the dispatcher, which
// releases the phone lock the completed payment still holds. It starts at
// new events when first created: older completions hold no lock.
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
		BackOff:       []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second},
		MaxAckPending: 1024,
	}
}
