package events_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/worker"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

// A message handed back while the stopping service still has a pull request
// open goes to the next live consumer, not to that request: with a plain Nak
// it would wait out the AckWait.
func TestHandBackSkipsAStoppingPull(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	const durable = "handback-test"
	cons, err := ns.JS.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: events.SubjectAll,
		AckWait:       time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.JS.Publish(ctx, "stk.requested.a", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	msg := fetchOne(t, cons)

	// The stopping service's pull request, still open when it hands back.
	inbox := ns.Conn.NewInbox()
	stale, err := ns.Conn.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(map[string]any{"batch": 1, "expires": int64(30 * time.Second)})
	if err := ns.Conn.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+events.StreamName+"."+durable, inbox, req); err != nil {
		t.Fatal(err)
	}
	if err := ns.Conn.Flush(); err != nil {
		t.Fatal(err)
	}

	handed := time.Now()
	if err := worker.HandBack(msg); err != nil {
		t.Fatal(err)
	}
	// The service stops: its fetch ends, a moment later, and its inbox goes.
	time.Sleep(100 * time.Millisecond)
	if err := stale.Unsubscribe(); err != nil {
		t.Fatal(err)
	}

	again := fetchOne(t, cons)
	if again.Subject() != "stk.requested.a" {
		t.Fatalf("got %s", again.Subject())
	}
	if d := time.Since(handed); d < worker.HandBackDelay {
		t.Errorf("delivered again after %s, before HandBackDelay", d)
	}
	md, err := again.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if md.NumDelivered != 2 {
		t.Errorf("delivery %d, want 2: the stale pull request got it first", md.NumDelivered)
	}
}

// fetchOne waits well under the AckWait for the consumer's next message.
func fetchOne(t *testing.T, cons jetstream.Consumer) jetstream.Msg {
	t.Helper()
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		return m
	}
	t.Fatalf("no message within 10s: %v", batch.Error())
	return nil
}
