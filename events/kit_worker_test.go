package events_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events/kit/worker"
	"github.com/stkgate/stkgate/events/natstest"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// worker's helpers against a real JetStream (here, where a server is linked
// in already, rather than in the worker package's own tests).

// TestEnsureBucket: a missing bucket is created as asked, by exactly one of
// several services starting at once; an existing one is opened as it is.
func TestEnsureBucket(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	cfg := jetstream.KeyValueConfig{Bucket: "kit_test", History: 1, TTL: time.Hour}

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := worker.EnsureBucket(ctx, ns.JS, cfg)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("EnsureBucket while others do: %v", err)
		}
	}

	other := cfg
	other.TTL = time.Minute
	kv, err := worker.EnsureBucket(ctx, ns.JS, other)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != time.Hour {
		t.Errorf("existing bucket's TTL %v changed, want it left at 1h", st.TTL())
	}
}

// TestSettle: Nak brings a message back after its delay and counts the
// delivery; Ack and Term end it.
func TestSettle(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	s, err := ns.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "KIT", Subjects: []string{"kit.>"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "kit", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(subj string) {
		t.Helper()
		if _, err := ns.JS.Publish(ctx, subj, nil); err != nil {
			t.Fatal(err)
		}
	}
	publish("kit.ack")
	next := func() jetstream.Msg {
		t.Helper()
		m, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	m := next()
	if m.Subject() != "kit.ack" || worker.Delivered(m) != 1 {
		t.Fatalf("first delivery: %s, delivered %d", m.Subject(), worker.Delivered(m))
	}
	worker.Nak(log, m, 0) // at least MinNakDelay: not a busy loop
	m = next()
	if m.Subject() != "kit.ack" || worker.Delivered(m) != 2 {
		t.Fatalf("after nak: %s, delivered %d; want kit.ack again, delivered 2", m.Subject(), worker.Delivered(m))
	}
	worker.Ack(ctx, log, m, "it comes back")
	publish("kit.term")
	m = next()
	if m.Subject() != "kit.term" {
		t.Fatalf("after ack: %s, want kit.term", m.Subject())
	}
	worker.Term(log, m, "test: cannot be handled")

	// Term is not confirmed: wait for the consumer to have let it go.
	wait.For(t, "no message pending after ack and term", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
}
