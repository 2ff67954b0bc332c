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

// The leader answers last_by_subj with a wildcard: the newest message of
// any of a payment's subjects (events.PaymentSubjects), whatever other
// payments published after it. The dispatcher reads a payment's latest
// event so in one round trip.
func TestLastMsgFromLeaderOfEveryEventOfAPayment(t *testing.T) {
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub := &events.Publisher{JS: ns.JS, Source: "test"}
	p := events.Payment{TrackingID: uuidN(1), Client: "c", Phone: "254712345678", Amount: 1, Reference: "r"}
	other := events.Payment{TrackingID: uuidN(2), Client: "c", Phone: "254712345679", Amount: 1, Reference: "r"}

	if _, err := events.LastMsgFromLeader(ctx, ns.JS, events.StreamName, events.PaymentSubjects(p.TrackingID)); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("nothing stored: %v, want ErrMsgNotFound", err)
	}
	for _, ev := range []events.Event{
		events.Requested{Payment: p},
		events.Completed{Payment: p, ResultCode: "0", Source: events.SourceCallback},
		events.Dispatched{Payment: p, CheckoutRequestID: "ws_CO_1"},
		events.LateResult{Payment: p, ResultCode: "1032"},
	} {
		if _, err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
		// Another payment's events, newer, are not its.
		if _, err := pub.Publish(ctx, events.Requested{Payment: other}); err != nil {
			t.Fatal(err)
		}
		if _, err := ns.JS.Publish(ctx, events.Subject(ev.Type(), other.TrackingID), []byte("x")); err != nil {
			t.Fatal(err)
		}
		msg, err := events.LastMsgFromLeader(ctx, ns.JS, events.StreamName, events.PaymentSubjects(p.TrackingID))
		if want := events.Subject(ev.Type(), p.TrackingID); err != nil || msg.Subject != want {
			t.Fatalf("after %s: newest of %s = %+v, %v; want %s", ev.Type(), events.PaymentSubjects(p.TrackingID), msg, err, want)
		}
	}
}

// FirstMsgFromLeader is the oldest message on a subject filter, wildcards
// included, asked of the leader: with LastMsgFromLeader, the dispatcher
// tells a payment whose only event is its request from one whose request
// was stored again after its other events.
func TestFirstMsgFromLeaderOfEveryEventOfAPayment(t *testing.T) {
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub := &events.Publisher{JS: ns.JS, Source: "test"}
	p := events.Payment{TrackingID: uuidN(3), Client: "c", Phone: "254712345678", Amount: 1, Reference: "r"}
	other := events.Payment{TrackingID: uuidN(4), Client: "c", Phone: "254712345679", Amount: 1, Reference: "r"}

	if _, err := events.FirstMsgFromLeader(ctx, ns.JS, events.StreamName, events.PaymentSubjects(p.TrackingID)); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("nothing stored: %v, want ErrMsgNotFound", err)
	}
	// Another payment's events, older, are not its.
	if _, err := pub.Publish(ctx, events.Requested{Payment: other}); err != nil {
		t.Fatal(err)
	}
	var first uint64
	for _, ev := range []events.Event{
		events.Requested{Payment: p},
		events.Dispatched{Payment: p, CheckoutRequestID: "ws_CO_1"},
		events.Completed{Payment: p, ResultCode: "0", Source: events.SourceCallback},
	} {
		ack, err := pub.Publish(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		if first == 0 {
			first = ack.Sequence
		}
		msg, err := events.FirstMsgFromLeader(ctx, ns.JS, events.StreamName, events.PaymentSubjects(p.TrackingID))
		if want := events.Subject(events.TypeRequested, p.TrackingID); err != nil || msg.Subject != want || msg.Sequence != first {
			t.Fatalf("after %s: oldest of %s = %+v, %v; want %s at %d", ev.Type(), events.PaymentSubjects(p.TrackingID), msg, err, want, first)
		}
	}
}
