package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

func TestPublishStoresOnceWithMsgID(t *testing.T) {
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub := &events.Publisher{JS: ns.JS, Source: "test"}
	ev := events.Requested{Payment: events.Payment{TrackingID: "0192f0a1-aaaa-7bbb-8ccc-000000000001", Client: "acme", Phone: "254712345678", Amount: 10, Reference: "R1"}}

	first, err := pub.Publish(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || first.Stream != events.StreamName {
		t.Fatalf("first ack = %+v", first)
	}
	again, err := pub.Publish(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Sequence != first.Sequence {
		t.Fatalf("retried publish ack = %+v, want a duplicate of seq %d", again, first.Sequence)
	}

	msg, err := ns.Stream.GetLastMsgForSubject(ctx, "stk.requested.0192f0a1-aaaa-7bbb-8ccc-000000000001")
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get(jetstream.MsgIDHeader); got != "0192f0a1-aaaa-7bbb-8ccc-000000000001:requested" {
		t.Errorf("Nats-Msg-Id = %q", got)
	}
	_, got, err := events.Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got.(events.Requested).Payment != ev.Payment {
		t.Errorf("stored %+v, want %+v", got, ev)
	}
	info, err := ns.Stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

func TestPublishFailsWithoutStream(t *testing.T) {
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ns.JS.DeleteStream(ctx, events.StreamName); err != nil {
		t.Fatal(err)
	}
	pub := &events.Publisher{JS: ns.JS, Source: "test"}
	_, err := pub.Publish(ctx, events.Requested{Payment: events.Payment{TrackingID: "x"}})
	if err == nil {
		t.Fatal("publish with no stream succeeded; callers would report an event that is not durable")
	}
}

func TestEnsureStreamIsIdempotent(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	s, err := events.EnsureStream(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	if cfg.Storage != jetstream.FileStorage || cfg.Duplicates != events.DuplicateWindow || len(cfg.Subjects) != 1 || cfg.Subjects[0] != "stk.>" {
		t.Errorf("stream config = %+v", cfg)
	}
	for _, cc := range []jetstream.ConsumerConfig{events.ProjectorConsumer(), events.DispatcherConsumer()} {
		if _, err := ns.JS.CreateOrUpdateConsumer(ctx, events.StreamName, cc); err != nil {
			t.Errorf("consumer %s: %v", cc.Durable, err)
		}
	}
}

func TestEnsureStreamUpdatesADifferentStream(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	old := events.StreamConfig(1)
	old.MaxAge = time.Hour
	old.Duplicates = time.Minute
	if _, err := ns.JS.UpdateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	s, err := events.EnsureStream(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := events.StreamConfig(1); info.Config.MaxAge != want.MaxAge || info.Config.Duplicates != want.Duplicates {
		t.Errorf("stream not brought up to date: %+v", info.Config)
	}
}

// TestPublishWithHeader: the header's values are stored with the event,
// beside the publish's own, and the caller's header is left as it was.
func TestPublishWithHeader(t *testing.T) {
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub := &events.Publisher{JS: ns.JS, Source: "test"}
	ev := events.Requested{Payment: events.Payment{TrackingID: "0192f0a1-aaaa-7bbb-8ccc-000000000002", Client: "acme", Phone: "254712345678", Amount: 10, Reference: "R1"}}
	header := nats.Header{"Stkgate-Test": []string{"x"}}
	if _, err := pub.PublishWithHeader(ctx, ev, header); err != nil {
		t.Fatal(err)
	}
	msg, err := ns.Stream.GetLastMsgForSubject(ctx, "stk.requested.0192f0a1-aaaa-7bbb-8ccc-000000000002")
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get("Stkgate-Test"); got != "x" {
		t.Errorf("Stkgate-Test = %q, want x", got)
	}
	if got := msg.Header.Get(jetstream.MsgIDHeader); got != "0192f0a1-aaaa-7bbb-8ccc-000000000002:requested" {
		t.Errorf("Nats-Msg-Id = %q", got)
	}
	if len(header) != 1 {
		t.Errorf("the caller's header was changed: %v", header)
	}
}
