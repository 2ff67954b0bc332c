package events_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

// storedLates is every stk.late_result's code stored for id, oldest first.
func storedLates(t *testing.T, ns *natstest.Server, id string) []string {
	t.Helper()
	subject := events.Subject(events.TypeLateResult, id)
	// A minute for the whole stream, read message by message: a read that
	// fails fails the test (skipped, it would hide a stored late result,
	// as it did under load with 5 s: "stored [1032]").
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := ns.Stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := ns.Stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted
		}
		if err != nil {
			t.Fatalf("read message %d: %v", seq, err)
		}
		if m.Subject != subject {
			continue
		}
		_, ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, ev.(events.LateResult).ResultCode)
	}
	return codes
}

// lateIDs numbers the payments of these tests.
var lateIDs atomic.Int64

func newLateID() string { return uuidN(1000 + int(lateIDs.Add(1))) }

func lateOf(id, code, receipt string) events.LateResult {
	return events.LateResult{Payment: events.Payment{TrackingID: id, Client: "acme", Phone: "254712345678", Amount: 10},
		FollowsCode: events.CodeNoAnswer, ResultCode: code, Receipt: receipt, Source: events.SourceCallback, LearntAt: time.Now().UTC()}
}

// TestPublishLateRule: a late result is published when none is stored, or
// when it is a success and the stored one a failure; otherwise the stored
// one stands.
func TestPublishLateRule(t *testing.T) {
	tests := []struct {
		name, stored, next string // stored "" for none
		published          bool
		want               []string
	}{
		{"first failure", "", "1032", true, []string{"1032"}},
		{"first success", "", "0", true, []string{"0"}},
		{"success after a failure", "1032", "0", true, []string{"1032", "0"}},
		{"failure after a success", "0", "1032", false, []string{"0"}},
		{"another failure", "1032", "1037", false, []string{"1032"}},
		{"another success", "0", "0", false, []string{"0"}},
	}
	ns := natstest.Start(t)
	pub := &events.Publisher{JS: ns.JS, Source: "test"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			id := newLateID()
			if tc.stored != "" {
				if _, err := pub.Publish(ctx, lateOf(id, tc.stored, "RCPT000001")); err != nil {
					t.Fatal(err)
				}
			}
			res, err := pub.PublishLate(ctx, ns.Stream, lateOf(id, tc.next, "RCPT000002"))
			if err != nil {
				t.Fatal(err)
			}
			if (res.Ack != nil) != tc.published || res.HadStored != (tc.stored != "") || res.Stored.ResultCode != tc.stored {
				t.Errorf("PublishLate = %+v, want published %v against %q", res, tc.published, tc.stored)
			}
			if got := storedLates(t, ns, id); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("stored %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPublishLateRacing: callback-ingest's late failure and the reconciler's
// late success of one payment, published at the same moment, are stored as
// [failure, success] or [success]; never with the failure last.
func TestPublishLateRacing(t *testing.T) {
	ns := natstest.Start(t)
	ingest := &events.Publisher{JS: ns.JS, Source: "stkgate/callback-ingest"}
	reconciler := &events.Publisher{JS: ns.JS, Source: "stkgate/reconciler"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ids := make([]string, 100)
	var wg sync.WaitGroup
	for i := range ids {
		ids[i] = newLateID()
		for _, p := range []struct {
			pub *events.Publisher
			ev  events.LateResult
		}{{ingest, lateOf(ids[i], "1032", "")}, {reconciler, lateOf(ids[i], "0", "")}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := p.pub.PublishLate(ctx, ns.Stream, p.ev); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	for _, id := range ids {
		if got := fmt.Sprint(storedLates(t, ns, id)); got != "[0]" && got != "[1032 0]" {
			t.Errorf("%s: stored %s, want [0] or [1032 0]", id, got)
		}
	}
}
