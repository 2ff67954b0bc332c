package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

func TestLastMsgConfirmsNotFoundWithTheLeader(t *testing.T) {
	ns := natstest.Start(t)
	ns.LaggingReplica(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub := &events.Publisher{JS: ns.JS, Source: "test"}
	stream, err := ns.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}

	// A plain direct get sometimes asks the lagging responder: the
	// reproduction of a 404 for a message the stream has.
	const tries = 64
	direct404 := 0
	for i := range tries {
		p := events.Payment{TrackingID: uuidN(i), Client: "c", Phone: "254712345678", Amount: 1, Reference: "r"}
		if _, err := pub.Publish(ctx, events.Requested{Payment: p}); err != nil {
			t.Fatal(err)
		}
		subject := events.Subject(events.TypeRequested, p.TrackingID)
		if _, err := stream.GetLastMsgForSubject(ctx, subject); errors.Is(err, jetstream.ErrMsgNotFound) {
			direct404++
		}
		msg, err := events.LastMsg(ctx, ns.JS, stream, subject)
		if err != nil {
			t.Fatalf("LastMsg(%s): %v", subject, err)
		}
		if msg.Subject != subject || len(msg.Data) == 0 || msg.Sequence == 0 {
			t.Fatalf("LastMsg(%s) = %+v", subject, msg)
		}
	}
	if direct404 == 0 {
		t.Fatalf("no direct get of %d answered by the lagging responder: the test reproduces nothing", tries)
	}
	t.Logf("%d of %d direct gets answered 'not found' for a stored message; LastMsg found every one", direct404, tries)

	// Nothing stored: not found, from the leader too.
	_, err = events.LastMsg(ctx, ns.JS, stream, events.Subject(events.TypeRequested, uuidN(999)))
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("LastMsg of nothing: %v, want ErrMsgNotFound", err)
	}
	// Headers come back from the leader's answer too.
	if _, err := ns.JS.Publish(ctx, "stk.requested.hdr", []byte("x"), jetstream.WithMsgID("hdr-1")); err != nil {
		t.Fatal(err)
	}
	msg, err := events.LastMsgFromLeader(ctx, ns.JS, events.StreamName, "stk.requested.hdr")
	if err != nil || string(msg.Data) != "x" || msg.Header.Get("Nats-Msg-Id") != "hdr-1" {
		t.Fatalf("LastMsgFromLeader = %+v, %v", msg, err)
	}
	if _, err := events.LastMsgFromLeader(ctx, ns.JS, "NO_SUCH_STREAM", "x"); err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("LastMsgFromLeader of a missing stream: %v, want another error", err)
	}
}

func uuidN(i int) string {
	const base = "0193a8c2-0000-7000-8000-000000000000"
	s := []byte(base)
	for j, k := len(s)-1, i; k > 0 && j >= 0; j, k = j-1, k/10 {
		s[j] = byte('0' + k%10)
	}
	return string(s)
}
