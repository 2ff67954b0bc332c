package events_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events/kit/worker"
	"github.com/stkgate/stkgate/events/testkit/natstest"
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

// poolStream is a stream KIT with a pull consumer "kit" on it.
func poolStream(t *testing.T, ackWait time.Duration) (*natstest.Server, jetstream.Stream, jetstream.ConsumerConfig) {
	t.Helper()
	ns := natstest.Start(t)
	s, err := ns.JS.CreateStream(context.Background(), jetstream.StreamConfig{Name: "KIT", Subjects: []string{"kit.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return ns, s, jetstream.ConsumerConfig{Durable: "kit", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait}
}

func publishN(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	for i := range n {
		if _, err := js.Publish(context.Background(), fmt.Sprintf("kit.%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// The Pool takes no more messages than it has free handlers: the others
// stay in the stream for other instances, their AckWait not running.
func TestPoolPullsOnlyForFreeHandlers(t *testing.T) {
	ns, s, cc := poolStream(t, time.Minute)
	ctx := context.Background()
	cons, err := s.CreateConsumer(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, ns.JS, 10)

	stop, cancel := context.WithCancel(ctx)
	release := make(chan struct{})
	var started atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		worker.Pool{Name: "kit", Concurrency: 3, FetchWait: 200 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}.
			Run(stop, cons, func(_, work context.Context, msg jetstream.Msg) {
				started.Add(1)
				<-release
				worker.Ack(work, slog.New(slog.DiscardHandler), msg, "")
			})
	}()
	wait.For(t, "3 handlers busy", func() bool { return started.Load() == 3 })
	// Several pulls' worth of time: none may take a fourth message.
	for range 3 {
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending != 3 || started.Load() != 3 {
			t.Fatalf("%d messages taken, %d handlers started with 3 busy; want 3 and 3", info.NumAckPending, started.Load())
		}
		time.Sleep(250 * time.Millisecond) // longer than a pull: a pull for a busy pool would have come
	}
	close(release)
	wait.For(t, "all 10 handled", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	cancel()
	<-done
}

// A message JetStream delivers at the very end of a pull is handled, not
// left delivered to nobody until its AckWait: the client must wait for the
// pull's end longer than the server holds it. (With nats.go's FetchContext
// the client gave up a tenth of the wait after the server's expiry, and a
// message in flight then was dropped; under load, a dispatcher test's
// payment waited out the consumer's AckWait before it was pushed.) Short
// pulls and messages arriving all the time put many at a pull's end.
func TestPoolLosesNoMessageAtAPullsEnd(t *testing.T) {
	ns, s, cc := poolStream(t, time.Hour)
	ctx := context.Background()
	cons, err := s.CreateConsumer(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	stop, cancel := context.WithCancel(ctx)
	var handled atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		worker.Pool{Name: "kit", Concurrency: 2, FetchWait: 20 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}.
			Run(stop, cons, func(_, work context.Context, msg jetstream.Msg) {
				worker.Ack(work, slog.New(slog.DiscardHandler), msg, "")
				handled.Add(1)
			})
	}()
	const n = 400
	for i := range n {
		if _, err := ns.JS.Publish(ctx, fmt.Sprintf("kit.%d", i), nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i%7) * time.Millisecond) // arrivals spread over the pulls' lives
	}
	wait.For(t, fmt.Sprintf("all %d handled", n), func() bool { return handled.Load() == n })
	cancel()
	<-done
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("ack pending %d, redelivered %d; want 0 and 0", info.NumAckPending, info.NumRedelivered)
	}
}

// A stopping Pool's last pull lives on at the server until it expires (a
// pull cannot be cancelled): Run waits for its end, and a message it gets
// meanwhile is handed back past that end, so that it goes to the next
// instance on its second delivery, not round and round the stopped pull
// (a plain HandBack came back to it every HandBackDelay until it expired),
// and no pull is left open after Run returns.
func TestPoolStoppedPullHandsBackPastItsEnd(t *testing.T) {
	ns, s, cc := poolStream(t, time.Hour)
	ctx := context.Background()
	cons, err := s.CreateConsumer(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	stop, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		worker.Pool{Name: "kit", Concurrency: 4, FetchWait: 3 * time.Second, Log: slog.New(slog.DiscardHandler)}.
			Run(stop, cons, func(context.Context, context.Context, jetstream.Msg) { t.Error("handled after the stop") })
	}()
	wait.For(t, "the pool's pull", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumWaiting == 1
	})
	cancel()
	publishN(t, ns.JS, 1) // to the stopping Pool's pull, still open
	<-done
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumWaiting != 0 {
		t.Fatalf("%d pulls waiting after Run returned", info.NumWaiting)
	}

	// The next instance.
	var msg jetstream.Msg
	wait.For(t, "the message at the next instance", func() bool {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return false
		}
		for m := range b.Messages() {
			msg = m
		}
		return msg != nil
	})
	md, err := msg.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if md.NumDelivered != 2 {
		t.Errorf("delivered %d times, want 2: once to the stopped pull, then to the next instance", md.NumDelivered)
	}
}

// At a stop, a handler running gets its work context for ShutdownTimeout,
// then it is cancelled and Run returns.
func TestPoolShutdownTimeout(t *testing.T) {
	ns, s, cc := poolStream(t, time.Minute)
	ctx := context.Background()
	cons, err := s.CreateConsumer(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, ns.JS, 1)
	stop, cancel := context.WithCancel(ctx)
	inHandler := make(chan struct{})
	var sawStop, cancelledAfter atomic.Bool
	done := make(chan struct{})
	var stoppedAt time.Time
	go func() {
		defer close(done)
		worker.Pool{Name: "kit", ShutdownTimeout: 300 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}.
			Run(stop, cons, func(stop, work context.Context, msg jetstream.Msg) {
				close(inHandler)
				<-stop.Done()
				sawStop.Store(true)
				<-work.Done()
				cancelledAfter.Store(time.Since(stoppedAt) >= 300*time.Millisecond)
			})
	}()
	<-inHandler
	stoppedAt = time.Now()
	cancel()
	<-done
	if !sawStop.Load() || !cancelledAfter.Load() {
		t.Errorf("handler saw stop %v, work cancelled after the shutdown timeout %v; want both", sawStop.Load(), cancelledAfter.Load())
	}
}

// A message its handler holds longer than the AckWait is not delivered
// again while the Pool reports it in progress.
func TestPoolKeepsInProgress(t *testing.T) {
	ns, s, cc := poolStream(t, 500*time.Millisecond)
	ctx := context.Background()
	cons, err := s.CreateConsumer(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, ns.JS, 1)
	stop, cancel := context.WithCancel(ctx)
	var deliveries atomic.Int32
	handled := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		worker.Pool{Name: "kit", Concurrency: 2, FetchWait: 100 * time.Millisecond, ProgressEvery: 100 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}.
			Run(stop, cons, func(_, work context.Context, msg jetstream.Msg) {
				if deliveries.Add(1) > 1 {
					return
				}
				time.Sleep(1500 * time.Millisecond) // three AckWaits of work
				worker.Ack(work, slog.New(slog.DiscardHandler), msg, "")
				close(handled)
			})
	}()
	<-handled
	cancel()
	<-done
	if n := deliveries.Load(); n != 1 {
		t.Errorf("%d deliveries of a message held in progress; want 1", n)
	}
}

// A consumer deleted under the Pool is created again (Recreate) and the
// Pool goes on with it.
func TestPoolRecreatesDeletedConsumer(t *testing.T) {
	ns, s, cc := poolStream(t, time.Minute)
	ctx := context.Background()
	cons, err := s.CreateConsumer(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	stop, cancel := context.WithCancel(ctx)
	var handled, recreated atomic.Int32
	var newest atomic.Uint64 // the highest stream sequence handled
	done := make(chan struct{})
	go func() {
		defer close(done)
		worker.Pool{Name: "kit", FetchWait: 100 * time.Millisecond, Log: slog.New(slog.DiscardHandler),
			Recreate: func(ctx context.Context) (jetstream.Consumer, error) {
				recreated.Add(1)
				return s.CreateOrUpdateConsumer(ctx, cc)
			}}.
			Run(stop, cons, func(_, work context.Context, msg jetstream.Msg) {
				handled.Add(1)
				if md, err := msg.Metadata(); err == nil {
					for seen := newest.Load(); md.Sequence.Stream > seen && !newest.CompareAndSwap(seen, md.Sequence.Stream); {
						seen = newest.Load()
					}
				}
				worker.Ack(work, slog.New(slog.DiscardHandler), msg, "")
			})
	}()
	publishN(t, ns.JS, 1)
	wait.For(t, "the first message handled", func() bool { return handled.Load() == 1 })
	if err := s.DeleteConsumer(ctx, cc.Durable); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the consumer created again", func() bool { return recreated.Load() >= 1 })
	publishN(t, ns.JS, 1) // kit.0 again: a new message
	// The new message comes through the consumer created again. Whether
	// the first comes again is the server's: a consumer created afresh
	// delivers the stream from its start, but on a loaded machine the
	// create met the deletion still under way and the server kept the old
	// consumer's state (the new message came as its second delivery, the
	// first not again).
	wait.For(t, "the new message handled through the consumer created again", func() bool { return newest.Load() >= 2 })
	cancel()
	<-done
}

// A message its handler naks with a delay comes back after that delay,
// however the Pool's progress reports fall: a report that reached the
// server after the nak made it take the message as in progress again, and
// redeliver it only after its AckWait. (nats.go checks that a message is
// not settled before it sends a report, but not in one step with the
// sending; under load a dispatcher test's request, handed back for 250 ms,
// waited out the consumer's 30 s AckWait.) Reports every millisecond and
// handlers that take about as long put many reports beside the naks.
func TestPoolProgressReportsDoNotUndoANaksDelay(t *testing.T) {
	ns, s, cc := poolStream(t, time.Hour)
	ctx := context.Background()
	cons, err := s.CreateConsumer(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	const msgs, rounds = 20, 30 // each message naked rounds-1 times, then acked
	publishN(t, ns.JS, msgs)
	stop, cancel := context.WithCancel(ctx)
	var acked atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		log := slog.New(slog.DiscardHandler)
		worker.Pool{Name: "kit", Concurrency: 4, FetchWait: 100 * time.Millisecond, ProgressEvery: time.Millisecond, Log: log}.
			Run(stop, cons, func(_, work context.Context, msg jetstream.Msg) {
				time.Sleep(time.Millisecond) // a report falls due meanwhile
				if worker.Delivered(msg) < rounds {
					worker.Nak(log, msg, 10*time.Millisecond)
					return
				}
				worker.Ack(work, log, msg, "")
				acked.Add(1)
			})
	}()
	wait.For(t, fmt.Sprintf("all %d acked after %d naks each (a nak's delay undone waits out the hour's AckWait)", msgs, rounds-1),
		func() bool { return acked.Load() == msgs })
	cancel()
	<-done
}
