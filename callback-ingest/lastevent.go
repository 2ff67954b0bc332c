package callback

// Reading a payment's newest event of a type from the STK stream.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
)

// errNotFound: no event on the subject.
var errNotFound = errors.New("no such event")

// lastEvent returns the newest event of type typ for id. A stored event of
// the wrong type or for another payment is events.ErrMalformed.
//
// A replica's "not found" is confirmed by the stream's leader
// (events.LastMsg): it would send a genuine callback to unknown_id, or
// publish a second outcome.
func lastEvent[E events.Event](ctx context.Context, js jetstream.JetStream, s jetstream.Stream, typ, id string) (E, error) {
	e, _, err := lastEventAt[E](ctx, js, s, typ, id)
	return e, err
}

// lastEventAt is lastEvent with the event's envelope time: when its
// publisher (another service, on its own clock) published it.
func lastEventAt[E events.Event](ctx context.Context, js jetstream.JetStream, s jetstream.Stream, typ, id string) (E, time.Time, error) {
	subject := events.Subject(typ, id)
	msg, err := events.LastMsg(ctx, js, s, subject)
	e, at, err := decodeLast[E](subject, id, msg, err)
	return e, at, err
}

// lastEventFromLeader is lastEvent asking the stream's leader at once
// (events.LastMsgFromLeader): for an event that is usually not there yet,
// whose "not found" lastEvent would ask the leader to confirm anyway, it
// is one round trip instead of two, and the same answer.
func lastEventFromLeader[E events.Event](ctx context.Context, js jetstream.JetStream, s jetstream.Stream, typ, id string) (E, error) {
	subject := events.Subject(typ, id)
	msg, err := events.LastMsgFromLeader(ctx, js, s.CachedInfo().Config.Name, subject)
	e, _, err := decodeLast[E](subject, id, msg, err)
	return e, err
}

// decodeLast is lastEventAt's decoding of the newest message on subject,
// msg, as it was read (err).
func decodeLast[E events.Event](subject, id string, msg *jetstream.RawStreamMsg, err error) (E, time.Time, error) {
	var zero E
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return zero, time.Time{}, errNotFound
	}
	if err != nil {
		return zero, time.Time{}, fmt.Errorf("get %s: %w", subject, err)
	}
	env, err := events.DecodeAs[E](msg.Data)
	if err != nil {
		return zero, time.Time{}, fmt.Errorf("decode %s: %w", subject, err)
	}
	if env.Subject != id {
		return zero, time.Time{}, fmt.Errorf("%w: %s holds %s for %q", events.ErrMalformed, subject, env.Type, env.Subject)
	}
	return env.Data, env.Time, nil
}
