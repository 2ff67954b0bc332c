package dispatcher

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// The consumer is deleted while no pull request of the dispatcher is
// waiting (every worker busy with a push): no "consumer deleted" notice
// reaches it, and its next pull finds no responder. It must find the
// consumer gone and create it again, not retry the pull for ever (make
// chaos saw both dispatchers stop pushing for good this way).
func TestConsumerDeletedBetweenPullsIsCreatedAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.Concurrency = 1 })
	h.proxy.setGate(func(int) bool { return false }) // the one worker's push is held
	busy := newPayment()
	h.request(busy)
	h.start()
	wait.For(t, "the held push", func() bool { return h.proxy.arrived() == 1 })
	h.deleteConsumer()
	h.proxy.setGate(nil)
	after := newPayment()
	h.request(after)
	wait.For(t, "the push after the deletion", func() bool { return len(h.accepted(after.TrackingID)) == 1 })
	h.waitSettled()
	h.stop()
	if n := len(h.accepted(busy.TrackingID)); n != 1 {
		t.Errorf("%d prompts of the request pushed during the deletion, want 1", n)
	}
}

// failingUpdates is a JetStream whose server fails every create or update
// of a consumer with an internal error, as nats-server did under make chaos
// after the dispatcher consumer was deleted while another dispatcher created
// it again ("open …/obs/dispatcher/meta.inf.tmp: no such file or
// directory", until it restarted), while the consumer itself ran on.
type failingUpdates struct{ jetstream.JetStream }

func (failingUpdates) CreateOrUpdateConsumer(context.Context, string, jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return nil, &jetstream.APIError{Code: 500, ErrorCode: 10012,
		Description: "open /data/jetstream/$G/streams/STK/obs/dispatcher/meta.inf.tmp: no such file or directory"}
}

// A dispatcher (re)starting while the server cannot update its consumers
// works with the consumers the server runs; with none running, it waits for
// the server rather than exiting (make chaos saw it exit 34 times).
func TestStartWhileTheServerCannotUpdateConsumers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := setUp(ctx, log, failingUpdates{h.ns.JS}, h.cfg); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no consumer running: setUp returned %v, want it to keep waiting until its context ends", err)
	}
	if _, err := setUp(context.Background(), log, h.ns.JS, h.cfg); err != nil {
		t.Fatal(err)
	}
	res, err := setUp(context.Background(), log, failingUpdates{h.ns.JS}, h.cfg)
	if err != nil {
		t.Fatalf("consumers running: %v", err)
	}
	if got := res.requests.CachedInfo().Name; got != events.ConsumerDispatcher {
		t.Errorf("requests from consumer %q, want %q", got, events.ConsumerDispatcher)
	}
	if got := res.release.CachedInfo().Name; got != events.ConsumerPhoneRelease {
		t.Errorf("releases from consumer %q, want %q", got, events.ConsumerPhoneRelease)
	}
}
