package events_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natsserver"
)

// A downstream service (a shop) settles its orders from stk.completed with
// a durable consumer of its own: what is published while it is down waits
// for it. The events carry every client's payments, so it filters on
// client. Here an embedded JetStream server stands in for stkgate's, and
// the example publishes the outcomes stkgate would.
func Example_consumeCompleted() {
	// The bound is for a broken example, not for speed: in a CI run at load
	// average 22, 30 s ran out before the shop's second run got its
	// message (a message a stopped run's pull was handed comes back only
	// after AckWait).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "stkgate-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	srv, err := natsserver.Start(natsserver.Options{DontListen: true, StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.WaitForShutdown()
	defer srv.Shutdown()
	nc, err := natsserver.Connect(srv)
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}
	if _, err := events.EnsureStream(ctx, js, 1); err != nil {
		panic(err)
	}
	stkgate := events.Publisher{JS: js, Source: "stkgate/callback-ingest"}
	complete := func(id, client, reference, code, receipt string) {
		p := events.Payment{TrackingID: id, Client: client, Phone: "254712345678", Amount: 1500,
			Reference: reference, RequestedAt: time.Now()}
		ev := events.Completed{Payment: p, ResultCode: code, Receipt: receipt, Source: events.SourceCallback, CompletedAt: time.Now()}
		if _, err := stkgate.Publish(ctx, ev); err != nil {
			panic(err)
		}
	}

	// The shop's durable consumer: created (or found again) at start.
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable:       "shop-orders",
		FilterSubject: events.Subject(events.TypeCompleted, ">"),
		AckPolicy:     jetstream.AckExplicitPolicy,
		// A message handed to a run that stopped before it acked (the
		// service crashed, or its last pull was still open at the server
		// as it stopped) comes back after AckWait: keep it short.
		AckWait: 5 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	// run consumes until want messages were handled, as one run of the
	// shop's service.
	run := func(want int) {
		handled := make(chan struct{}, want)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			defer func() { handled <- struct{}{} }()
			_, ev, err := events.Decode(m.Data())
			if err != nil {
				_ = m.Term() // never decodable: stkgate's dead-letter watcher keeps it in STK_DLQ
				return
			}
			if c, ok := ev.(events.Completed); ok && c.Client == "shop" {
				status, label := events.Outcome(c.ResultCode)
				fmt.Printf("order %s: status %d, %s", c.Reference, status, label)
				if c.Receipt != "" {
					fmt.Printf(", receipt %s", c.Receipt)
				}
				fmt.Println()
			}
			_ = m.Ack() // after the order is settled: a redelivery repeats it
		})
		if err != nil {
			panic(err)
		}
		defer cc.Stop()
		for range want {
			select {
			case <-handled:
			case <-ctx.Done():
				panic(ctx.Err())
			}
		}
	}

	complete("0193a8c2-7b1e-7c00-8000-000000000001", "shop", "ORDER-1", "0", "SCL4XQ2B7K")
	complete("0193a8c2-7b1e-7c00-8000-000000000002", "another-client", "INV-9", "0", "SCL4XQ2B7L")
	run(2)
	// While the shop is down, another payment ends: the customer cancelled.
	complete("0193a8c2-7b1e-7c00-8000-000000000003", "shop", "ORDER-2", "1032", "")
	run(1) // the shop's next run finds it

	// Output:
	// order ORDER-1: status 1, Success, receipt SCL4XQ2B7K
	// order ORDER-2: status 1, Cancelled by User
}
