package events

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events/kit/worker"
)

// lateTries bounds how often PublishLate reads the stored late result again
// after another late result was stored between its read and its publish.
// Two late results race at most (a failure and a success): a few tries is
// plenty.
const lateTries = 5

// LatePublish is what PublishLate found and did.
type LatePublish struct {
	Stored    LateResult        // the stored late result ev was decided against
	HadStored bool              // whether there was one
	Ack       *jetstream.PubAck // nil when ev was not published: Stored stands
}

// PublishLate publishes ev as its payment's stk.late_result unless a stored
// one stands before it: any but a failure that ev, a success, replaces
// (LateReplaces). A repeat of the stored one is not published either.
//
// Reading the stored one and publishing are one step: the publish expects
// the subject's last sequence to be the one read (0 when none), so a late
// result another service (or another copy of this one) stored in between
// makes JetStream refuse it (wrong last sequence), and PublishLate reads and
// decides again, up to lateTries times. Without that, a failure and a
// success racing could both be stored with the failure last, and a repeat of
// the success past the duplicate window stored again.
//
// A stored late result that cannot be read is an error wrapping
// ErrMalformed: nothing is published over it.
func (p *Publisher) PublishLate(ctx context.Context, s jetstream.Stream, ev LateResult) (LatePublish, error) {
	subject := Subject(TypeLateResult, ev.TrackingID)
	var err error
	for try := range lateTries {
		var out LatePublish
		var seq uint64
		out.Stored, seq, out.HadStored, err = p.storedLate(ctx, s, ev.TrackingID)
		if err != nil {
			return out, err
		}
		if out.HadStored && !LateReplaces(out.Stored.ResultCode, ev.ResultCode) {
			return out, nil
		}
		out.Ack, err = p.Publish(ctx, ev, jetstream.WithExpectLastSequencePerSubject(seq))
		switch {
		case err == nil && out.Ack.Duplicate:
			// A replicated stream checks the message id before the
			// expected sequence: the same late result is stored
			// already. Read again, so that the caller learns what
			// stands instead of a publish that stored nothing.
		case !wrongLastSequence(err):
			return out, err
		}
		// Another late result was stored in between, or the read came
		// from a replica behind the leader: give it a moment to catch up
		// before reading again.
		if err := pause(ctx, try); err != nil {
			return LatePublish{}, err
		}
	}
	return LatePublish{}, fmt.Errorf("publish %s: another late result was stored each of %d times: %w", subject, lateTries, err)
}

// pause waits a little longer at each try (10 ms, 20 ms, …, with jitter)
// or until ctx ends.
func pause(ctx context.Context, try int) error {
	if !worker.Sleep(ctx, time.Duration(try+1)*10*time.Millisecond+rand.N(10*time.Millisecond)) {
		return ctx.Err()
	}
	return nil
}

// storedLate is the payment's newest stk.late_result and its stream
// sequence; found false (and sequence 0) when there is none.
func (p *Publisher) storedLate(ctx context.Context, s jetstream.Stream, id string) (l LateResult, seq uint64, found bool, err error) {
	subject := Subject(TypeLateResult, id)
	m, err := LastMsg(ctx, p.JS, s, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return l, 0, false, nil
	case err != nil:
		return l, 0, false, fmt.Errorf("get %s: %w", subject, err)
	}
	env, ev, err := Decode(m.Data)
	if err != nil {
		return l, 0, false, fmt.Errorf("decode %s: %w", subject, err)
	}
	l, ok := ev.(LateResult)
	if !ok || env.Subject != id {
		return l, 0, false, fmt.Errorf("%w: %s holds %s for %q", ErrMalformed, subject, env.Type, env.Subject)
	}
	return l, m.Sequence, true, nil
}

// wrongLastSequence reports whether err is JetStream refusing a publish
// whose expected last sequence was not the subject's: 10071, or 10164 from
// a replicated stream.
func wrongLastSequence(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
