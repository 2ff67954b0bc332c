package dispatcher

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

// wire records, from the test's own connection, the requests (messages
// with a reply subject: each a round trip) the dispatcher sends about one
// payment: whatever names its tracking id or phone in the subject or the
// body, and the consumer's acks (the test has one payment in flight).
type wire struct {
	mu   sync.Mutex
	reqs []string
}

func (h *harness) watchWire(p events.Payment) *wire {
	h.t.Helper()
	w := &wire{}
	id, phone := []byte(p.TrackingID), []byte(p.Phone)
	sub, err := h.ns.Conn.Subscribe(">", func(m *nats.Msg) {
		if m.Reply == "" || strings.HasPrefix(m.Subject, "_INBOX.") {
			return
		}
		ours := strings.Contains(m.Subject, p.TrackingID) || strings.Contains(m.Subject, p.Phone) ||
			bytes.Contains(m.Data, id) || bytes.Contains(m.Data, phone) ||
			strings.HasPrefix(m.Subject, "$JS.ACK."+events.StreamName+"."+events.ConsumerDispatcher+".")
		if !ours || strings.HasPrefix(m.Subject, events.TypeRequested+".") {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.reqs = append(w.reqs, m.Subject)
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.ns.Conn.Flush(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

func (w *wire) requests() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.reqs...)
}

// A first push (no attempt record, the phone free, no waiter) asks
// JetStream only what keeps it safe: the record (none), the phone's lock
// and waiting list, two looks at what the stream holds of the payment (its
// newest and its oldest event: the request stored once) and one at the push
// log (all of the streams' leaders), the record written
// and the push logged before the call, the lock renewed and the record
// written after it, stk.dispatched stored, the ack confirmed.
func TestFirstPushRoundTrips(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.ProgressInterval = time.Minute })
	h.start()
	h.waitConsumer()
	p := newPayment()
	w := h.watchWire(p)
	h.request(p)
	h.waitSettled()
	h.stop()
	if n := len(h.accepted(p.TrackingID)); n != 1 {
		t.Fatalf("%d pushes accepted, want 1", n)
	}
	// Let the last answers' copies reach the watching connection.
	if err := h.ns.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	got := w.requests()
	const want = 14
	if len(got) > want {
		t.Errorf("a first push made %d JetStream round trips, want at most %d:\n%s", len(got), want, strings.Join(got, "\n"))
	} else {
		t.Logf("a first push made %d JetStream round trips:\n%s", len(got), strings.Join(got, "\n"))
	}
}

// shortly bounds a test's JetStream calls, all of them together: only a
// hang should reach it. At 10 s, TestEvidenceFromThePaymentsNewestEvent
// ran out of it on a fresh machine whose CI run took 510 s (load 17): its
// six cases ask for evidence 16 times each.
func shortly(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// evidence reads a payment's newest event from the stream's leader, and
// what it cannot prove from it is asked for: a completion stored before
// stk.dispatched (a callback faster than the dispatcher's publish), one
// followed by a late result, a push logged when the stream holds only the
// request or nothing at all. A replica that lags is never asked.
func TestEvidenceFromThePaymentsNewestEvent(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ns.LaggingReplica(t)
	ctx := shortly(t)
	if _, err := events.EnsurePushLogStream(ctx, ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	d := &dispatcher{js: ns.JS, stream: ns.Stream}
	pub := &events.Publisher{JS: ns.JS, Source: "test"}
	sent := time.Now().UTC().Truncate(time.Millisecond)
	for _, tc := range []struct {
		name   string
		stored func(p events.Payment) []events.Event
		logged bool // a push of it is in STK_PUSHES
		want   found
	}{
		{"nothing stored", func(events.Payment) []events.Event { return nil }, false, found{}},
		{"the request purged, a push logged", func(events.Payment) []events.Event { return nil }, true, found{pushed: &events.Attempt{Calls: 1}}},
		{"the request alone", func(p events.Payment) []events.Event { return []events.Event{events.Requested{Payment: p}} }, false, found{}},
		{"the request, a push logged", func(p events.Payment) []events.Event { return []events.Event{events.Requested{Payment: p}} }, true, found{pushed: &events.Attempt{Calls: 1}}},
		{"dispatched", func(p events.Payment) []events.Event {
			return []events.Event{events.Requested{Payment: p}, events.Dispatched{Payment: p}}
		}, true, found{dispatched: true}},
		{"completed", func(p events.Payment) []events.Event {
			return []events.Event{events.Requested{Payment: p}, events.Dispatched{Payment: p}, events.Completed{Payment: p, ResultCode: "0"}}
		}, true, found{completed: true}},
		{"completed before dispatched", func(p events.Payment) []events.Event {
			return []events.Event{events.Requested{Payment: p}, events.Completed{Payment: p, ResultCode: "0"}, events.Dispatched{Payment: p}}
		}, true, found{completed: true}},
		{"completed, then a late result", func(p events.Payment) []events.Event {
			return []events.Event{events.Requested{Payment: p}, events.Dispatched{Payment: p}, events.Completed{Payment: p, ResultCode: "1037"},
				events.LateResult{Payment: p, ResultCode: "0"}}
		}, true, found{completed: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPayment()
			for _, ev := range tc.stored(p) {
				if _, err := pub.Publish(ctx, ev); err != nil {
					t.Fatal(err)
				}
			}
			if tc.logged {
				if err := d.logPush(ctx, events.Attempt{TrackingID: p.TrackingID, State: events.AttemptSending, Calls: 1, SentAt: sent, FirstSentAt: sent}); err != nil {
					t.Fatal(err)
				}
			}
			// Asked many times: a lagging replica, if asked, would
			// answer "not found" about half the time.
			for range 16 {
				got, err := d.evidence(ctx, p.TrackingID, true)
				if err != nil {
					t.Fatal(err)
				}
				if got.completed != tc.want.completed || got.dispatched != tc.want.dispatched || (got.pushed == nil) != (tc.want.pushed == nil) {
					t.Fatalf("evidence = %+v, want %+v", got, tc.want)
				}
				if got.pushed != nil && (got.pushed.TrackingID != p.TrackingID || got.pushed.Calls != 1 || !got.pushed.SentAt.Equal(sent)) {
					t.Fatalf("push logged = %+v", *got.pushed)
				}
				if c, err := d.evidence(ctx, p.TrackingID, false); err != nil || c.completed != tc.want.completed || c.dispatched || c.pushed != nil {
					t.Fatalf("evidence with the record kept = %+v, %v; want completed %v alone", c, err, tc.want.completed)
				}
			}
		})
	}
}

// Taking a free phone leaves its waiting list as leave would: our own
// entry (an earlier delivery waited), a waiter passed over and one unseen
// for too long are taken off; a later waiter stays; an empty list is not
// read again after the lock is taken.
func TestAcquireLeavesTheListAsLeaveWould(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ph := phones{kv: h.bucket(events.PhonesConfig(1, 0))}
	ctx := shortly(t)
	now := time.Now().UTC()
	const gone = time.Hour
	qt := queueTimes{stale: time.Minute, gone: gone, waiting: func(context.Context, string) bool { return false }}
	for _, tc := range []struct {
		name   string
		before []waiter // "me" is the acquiring request (seq 5)
		after  []string
	}{
		{"no list", nil, nil},
		{"a later waiter", []waiter{{"later", 9, now}}, []string{"later"}},
		{"our own entry", []waiter{{"me", 5, now}, {"later", 9, now}}, []string{"later"}},
		{"an earlier waiter passed over", []waiter{{"early", 1, now.Add(-10 * time.Minute)}, {"later", 9, now}}, []string{"later"}},
		{"a later waiter unseen too long", []waiter{{"later", 9, now.Add(-2 * gone)}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			phone := newPayment().Phone
			for _, w := range tc.before {
				if err := ph.join(ctx, phone, w, 24*time.Hour); err != nil {
					t.Fatal(err)
				}
			}
			rev, before, err := ph.acquire(ctx, phone, "me", 5, now, qt)
			if err != nil || before != "" || rev == 0 {
				t.Fatalf("acquire = %d, %q, %v; want the lock", rev, before, err)
			}
			q, _, err := ph.queue(ctx, phone)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, w := range q {
				ids = append(ids, w.ID)
			}
			if !slices.Equal(ids, tc.after) {
				t.Errorf("waiting list after the lock was taken: %v, want %v", ids, tc.after)
			}
		})
	}
}

// A payment's stk.requested can be stored again after its stk.dispatched or
// stk.completed: stkgate-admin dlq replay publishes a dead-lettered request
// again under its own Nats-Msg-Id, which JetStream stores once the duplicate
// window has passed (the tool says to replay it after that). The newest
// event is then a stk.requested, and proves nothing: should the attempt
// record be gone, what the stream holds still stops the push, even with no
// push logged (a request given up or never dispatched had none).
func TestEvidenceWhenTheRequestIsStoredAgain(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := shortly(t)
	if _, err := events.EnsurePushLogStream(ctx, ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	d := &dispatcher{js: ns.JS, stream: ns.Stream}
	pub := &events.Publisher{JS: ns.JS, Source: "test"}
	for _, tc := range []struct {
		name   string
		stored func(p events.Payment) []events.Event
		want   found
	}{
		{"given up, then the request again", func(p events.Payment) []events.Event {
			return []events.Event{events.Requested{Payment: p}, events.Completed{Payment: p, ResultCode: CodePhoneBusy}}
		}, found{completed: true}},
		{"dispatched, then the request again", func(p events.Payment) []events.Event {
			return []events.Event{events.Requested{Payment: p}, events.Dispatched{Payment: p}}
		}, found{dispatched: true}},
		{"dispatched and completed, then the request again", func(p events.Payment) []events.Event {
			return []events.Event{events.Requested{Payment: p}, events.Dispatched{Payment: p}, events.Completed{Payment: p, ResultCode: "0"}}
		}, found{completed: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPayment()
			for _, ev := range tc.stored(p) {
				if _, err := pub.Publish(ctx, ev); err != nil {
					t.Fatal(err)
				}
			}
			// The request replayed past the duplicate window: the same
			// body stored again (here under another Nats-Msg-Id, as the
			// window's having passed would let the same one through).
			subject, msgID, body, err := events.Encode("api", events.Requested{Payment: p}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ns.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: body}, jetstream.WithMsgID(msgID+":replayed")); err != nil {
				t.Fatal(err)
			}
			got, err := d.evidence(ctx, p.TrackingID, true)
			if err != nil {
				t.Fatal(err)
			}
			if got.completed != tc.want.completed || got.dispatched != tc.want.dispatched || got.pushed != nil {
				t.Fatalf("evidence = %+v, want %+v: the request stored again hid what the stream holds, and it would be pushed", got, tc.want)
			}
		})
	}
}
