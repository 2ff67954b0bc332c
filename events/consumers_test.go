package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

// TestConsumersAsTheServerRunsThem creates every durable consumer from its
// definition and reads its configuration back from nats-server: what the
// server runs, not what was asked, is what the services live with. (With a
// BackOff, nats-server replaces the AckWait by the first interval: the
// projector had asked for 30 s and ran with 1 s.)
func TestConsumersAsTheServerRunsThem(t *testing.T) {
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ensure := range []func(context.Context, jetstream.JetStream, int) (jetstream.Stream, error){
		events.EnsureCallbackStream, events.EnsureAdvisoryStream, events.EnsurePushLogStream,
	} {
		if _, err := ensure(ctx, ns.JS, 1); err != nil {
			t.Fatal(err)
		}
	}

	// What each consumer's code relies on.
	type want struct {
		ackWait       time.Duration
		maxDeliver    int
		maxAckPending int
	}
	tests := []struct {
		stream string
		cfg    jetstream.ConsumerConfig
		want   want
	}{
		// Holds a batch with InProgress while Postgres is away; never
		// skips an event, however long the outage.
		{events.StreamName, events.ProjectorConsumer(), want{30 * time.Second, -1, 4096}},
		// Its waits are NakWithDelay (a phone's queue, Daraja's minute);
		// gives a request up itself at its last delivery.
		{events.StreamName, events.DispatcherConsumer(), want{30 * time.Second, events.DispatcherMaxDeliver, 10000}},
		// A release that keeps failing is let go by the lock's TTL.
		{events.StreamName, events.PhoneReleaseConsumer(), want{30 * time.Second, 20, 1024}},
		// Timers are nak delays; never given up.
		{events.StreamName, events.ReconcilerDispatchedConsumer(), want{30 * time.Second, -1, events.ReconcilerMaxAckPending}},
		{events.StreamName, events.ReconcilerRequestedConsumer(), want{30 * time.Second, -1, events.ReconcilerMaxAckPending}},
		{events.CallbackStreamName, events.ReconcilerConfirmConsumer(), want{30 * time.Second, -1, events.ReconcilerMaxAckPending}},
		{events.CallbackStreamName, events.CallbackApplyConsumer(), want{30 * time.Second, -1, 1024}},
		{events.AdvisoryStreamName, events.DeadLetterConsumer(), want{30 * time.Second, -1, 256}},
	}
	for _, tc := range tests {
		t.Run(tc.cfg.Durable, func(t *testing.T) {
			c, err := ns.JS.CreateOrUpdateConsumer(ctx, tc.stream, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got := info.Config
			if len(got.BackOff) != 0 {
				t.Errorf("BackOff %v: nats-server then runs the first interval as the AckWait (%s here) and measures every NakWithDelay against the BackOff", got.BackOff, got.AckWait)
			}
			if diff := cmp.Diff(tc.want, want{got.AckWait, got.MaxDeliver, got.MaxAckPending}, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("the server runs (-relied on +got):\n%s", diff)
			}
			if got.AckPolicy != jetstream.AckExplicitPolicy {
				t.Errorf("AckPolicy %v, want explicit", got.AckPolicy)
			}
		})
	}
}
