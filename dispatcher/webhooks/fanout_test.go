package webhooks

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/webhook"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

// handedMsg is an STK event handed to the fan-out, as JetStream would.
type handedMsg struct {
	jetstream.Msg
	data  []byte
	acked int
}

func (m *handedMsg) Data() []byte                     { return m.data }
func (m *handedMsg) Subject() string                  { return "stk.completed.x" }
func (m *handedMsg) DoubleAck(context.Context) error  { m.acked++; return nil }
func (m *handedMsg) NakWithDelay(time.Duration) error { return nil }
func (m *handedMsg) TermWithReason(string) error      { return nil }
func (m *handedMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: 1}, nil
}

// TestFanOutAgainMakesNoSecondTask: an event handed to the fan-out again
// (its ack lost in a crash after the tasks were published) makes neither
// a second delivery nor a second task: nothing is sent twice.
func TestFanOutAgainMakesNoSecondTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := natstest.Start(t)
	db := pgtest.New(t)
	st := store.New(db)
	if _, err := ns.JS.CreateOrUpdateStream(ctx, TaskStreamConfig(1)); err != nil {
		t.Fatal(err)
	}
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	sealer, _ := webhook.NewSealer(base64.StdEncoding.EncodeToString(k))
	for range 2 {
		if err := st.AddWebhookEndpoint(ctx, store.WebhookEndpoint{ID: uuid.NewString(), Client: "shop", URL: "https://shop.example.com/",
			Events: []string{events.TypeCompleted}, Secret: []byte("sealed")}); err != nil {
			t.Fatal(err)
		}
	}
	w := &runner{log: slog.New(slog.NewTextHandler(io.Discard, nil)), js: ns.JS, store: st, sealer: sealer}
	ev := events.Completed{Payment: events.Payment{TrackingID: uuid.NewString(), Client: "shop", Phone: "254708374149", Amount: 1,
		Reference: "r", RequestedAt: time.Now()}, ResultCode: "0", Source: events.SourceCallback, CompletedAt: time.Now()}
	_, _, body, err := events.Encode("test", ev, time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg := &handedMsg{data: body}
	w.fanOut(ctx, ctx, msg)
	w.fanOut(ctx, ctx, msg)
	if msg.acked != 2 {
		t.Fatalf("acked %d times, want each run to ack", msg.acked)
	}
	s, err := ns.JS.Stream(ctx, TaskStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("%d tasks for one event and two endpoints, handed over twice; want 2", info.State.Msgs)
	}
	if ds, _ := st.WebhookDeliveries(ctx, "shop", ev.TrackingID); len(ds) != 2 {
		t.Errorf("%d deliveries, want 2", len(ds))
	}
}

// TestTaskStreamLimitsLifted: a task stream made by an older worker (7
// days' MaxAge, old tasks discarded) is updated in place to no age limit,
// so a task is never dropped before its delivery is final.
func TestTaskStreamLimitsLifted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := natstest.Start(t)
	old := TaskStreamConfig(1)
	old.MaxAge, old.Discard = 7*24*time.Hour, jetstream.DiscardOld
	if _, err := ns.JS.CreateOrUpdateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	s, err := ns.JS.CreateOrUpdateStream(ctx, TaskStreamConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; c.MaxAge != 0 || c.MaxBytes > 0 || c.MaxMsgs > 0 || c.Discard != jetstream.DiscardNew {
		t.Errorf("task stream: max age %s, bytes %d, msgs %d, discard %v; want no limit, discard new", c.MaxAge, c.MaxBytes, c.MaxMsgs, c.Discard)
	}
}
