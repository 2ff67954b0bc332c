package projector_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natsserver"
)

// A consumer deleted under a running projector (an operator, a rebuild) is
// created again, and the events after it are projected.
func TestRunRecoversFromADeletedConsumer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.run(h.config())
	s1 := newStory("0")
	h.publish(s1.requested, s1.dispatched, s1.completed)
	h.converge(map[string]store.Record{s1.id: s1.want(store.StageCompleted)})
	h.settled()
	if err := h.ns.JS.DeleteConsumer(context.Background(), events.StreamName, events.ConsumerProjector); err != nil {
		t.Fatal(err)
	}
	s2 := newStory("1032")
	h.publish(s2.requested, s2.dispatched, s2.completed)
	h.converge(map[string]store.Record{s1.id: s1.want(store.StageCompleted), s2.id: s2.want(store.StageCompleted)})
	h.settled()
}

// A projector stopped while its NATS server is gone returns (its last pull
// ends at the client, FetchMaxWait and a second).
func TestRunStopsWhileNATSIsDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stop := h.run(h.config())
	s1 := newStory("0")
	h.publish(s1.requested, s1.dispatched, s1.completed)
	h.converge(map[string]store.Record{s1.id: s1.want(store.StageCompleted)})
	h.ns.Shutdown()
	h.ns.WaitForShutdown()
	stop()
}

// A NATS server restarted under a running projector: the projector goes on
// once it is back.
func TestRunNATSRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.run(h.config())
	s1 := newStory("0")
	h.publish(s1.requested, s1.dispatched, s1.completed)
	h.converge(map[string]store.Record{s1.id: s1.want(store.StageCompleted)})
	port := h.ns.Addr().(*net.TCPAddr).Port
	dir := h.ns.JetStreamConfig().StoreDir
	if filepath.Base(dir) == "jetstream" {
		dir = filepath.Dir(dir)
	}
	h.ns.Shutdown()
	h.ns.WaitForShutdown()
	s, err := natsserver.Start(natsserver.Options{Port: port, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	// the harness's own connection reconnects too
	h.eventually("harness reconnected", func() (bool, string) { return h.ns.Conn.IsConnected(), "not yet" })
	s2 := newStory("1032")
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := h.pub.Publish(context.Background(), s2.requested); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.publish(s2.dispatched, s2.completed)
	h.converge(map[string]store.Record{s2.id: s2.want(store.StageCompleted)})
}

// A projector stopped while its batches wait on a slow database (a lock),
// with DrainTimeout over at once: it returns once they are settled, and
// leaves nothing to the AckWait: every message still ack-pending was
// handed back, and the next projector applies them all.
func TestRunStopDuringSlowDatabaseLeavesNothingToTheAckWait(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	handedBack := h.handedBack()
	cfg := h.config()
	cfg.BatchSize = 3
	cfg.ApplyTimeout = time.Second
	cfg.DrainTimeout = time.Nanosecond
	stop := h.run(cfg)
	first := newStory("0")
	h.publish(first.requested)
	h.converge(map[string]store.Record{first.id: first.want(store.StageRequested)})

	lock := h.lockReadModel()
	want := map[string]store.Record{}
	for i := range 60 {
		s := newStory([]string{"0", "1032"}[i%2])
		h.publish(s.requested, s.dispatched, s.completed)
		want[s.id] = s.want(store.StageCompleted)
	}
	h.eventually("batches wait for the lock", lock.waiting("stk_pushes", 1))
	stop()
	h.eventually("every pending message handed back", func() (bool, string) {
		info, err := h.consumerInfo()
		if err != nil {
			return false, err.Error()
		}
		n := handedBack()
		return info.NumAckPending == n, fmt.Sprintf("%d ack pending, %d handed back", info.NumAckPending, n)
	})
	lock.release()
	h.run(h.config())
	h.converge(want)
	h.settled()
}
