package deadletter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/deadletter/advisory"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/testkit/logtest"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

type env struct {
	t    *testing.T
	ns   *natstest.Server
	logs *logtest.Buffer
	// metrics is the watcher's Registry.
	metrics *metrics.Registry
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{t: t, ns: natstest.Start(t), logs: &logtest.Buffer{}, metrics: metrics.New("projector")}
}

// start runs a watcher until the returned stop is called (or the test
// ends), and waits until it is consuming.
func (e *env) start() (stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			JS:            e.ns.JS,
			Replicas:      1,
			Logger:        slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			RetryMaxDelay: 200 * time.Millisecond,
			Metrics:       e.metrics,
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				e.t.Error("Run did not return after cancel")
			}
		})
	}
	e.t.Cleanup(stop)
	e.eventually("the watcher consumes", func() bool {
		return strings.Contains(e.logs.String(), `"msg":"dead-letter watcher started"`)
	})
	return stop
}

// counted checks that want dead letters were counted since Count was
// before. A dead letter is stored (and seen in STK_DLQ) before it is
// counted: the count is waited for.
func (e *env) counted(before, want int64) {
	e.t.Helper()
	e.eventually(fmt.Sprintf("%d dead letters counted", want), func() bool { return Count()-before >= want })
	if n := Count() - before; n != want {
		e.t.Errorf("counted %d, want %d", n, want)
	}
}

func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting: %s\nlogs:\n%s", what, e.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// consumer makes a consumer of STK such as a service would, giving up after
// maxDeliver deliveries.
func (e *env) consumer(name string, maxDeliver int) jetstream.Consumer {
	e.t.Helper()
	c, err := e.ns.JS.CreateOrUpdateConsumer(context.Background(), events.StreamName, jetstream.ConsumerConfig{
		Durable:       name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: events.Subject(events.TypeRequested, "*"),
		AckWait:       30 * time.Second,
		MaxDeliver:    maxDeliver,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// request publishes an stk.requested and returns its body and sequence.
func (e *env) request(id string) ([]byte, uint64) {
	e.t.Helper()
	ctx := context.Background()
	p := events.Publisher{JS: e.ns.JS, Source: "stkgate/api"}
	ack, err := p.Publish(ctx, events.Requested{Payment: events.Payment{
		TrackingID: id, Client: "acme", Phone: "254712345678", Amount: 10, Reference: "R1",
		RequestedAt: time.Date(2024, 3, 21, 11, 30, 1, 0, time.UTC),
	}})
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := e.ns.Stream.GetMsg(ctx, ack.Sequence)
	if err != nil {
		e.t.Fatal(err)
	}
	return m.Data, ack.Sequence
}

// next fetches the consumer's next message.
func (e *env) next(c jetstream.Consumer) jetstream.Msg {
	e.t.Helper()
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		e.t.Fatal(err)
	}
	for m := range batch.Messages() {
		return m
	}
	e.t.Fatalf("no message: %v", batch.Error())
	return nil
}

// terminate fetches the next message and terminates it with reason.
func (e *env) terminate(c jetstream.Consumer, reason string) {
	e.t.Helper()
	if err := e.next(c).TermWithReason(reason); err != nil {
		e.t.Fatal(err)
	}
}

// dlq returns every dead letter.
func (e *env) dlq() []*jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.ns.JS.Stream(ctx, events.DeadLetterStreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func (e *env) waitDLQ(n int) []*jetstream.RawStreamMsg {
	e.t.Helper()
	var got []*jetstream.RawStreamMsg
	e.eventually(fmt.Sprintf("%d dead letters", n), func() bool {
		got = e.dlq()
		return len(got) >= n
	})
	if len(got) != n {
		e.t.Fatalf("%d dead letters, want %d", len(got), n)
	}
	return got
}

func (e *env) advisories() uint64 {
	e.t.Helper()
	s, err := e.ns.JS.Stream(context.Background(), events.AdvisoryStreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// deadLetter is a dead letter's subject, headers that a test can know and
// body.
type deadLetter struct {
	Subject string
	Headers map[string]string
	Body    string
}

func view(m *jetstream.RawStreamMsg) deadLetter {
	h := map[string]string{}
	for _, k := range []string{events.DeadLetterHeaderReason, events.DeadLetterHeaderTermReason, events.DeadLetterHeaderConsumer,
		events.DeadLetterHeaderStream, events.DeadLetterHeaderStreamSeq, events.DeadLetterHeaderDeliveries,
		events.DeadLetterHeaderSubject, events.DeadLetterHeaderTrackingID, events.DeadLetterHeaderMissing,
		events.DeadLetterHeaderOriginalID, jetstream.MsgIDHeader} {
		if v := m.Header.Get(k); v != "" {
			h[k] = v
		}
	}
	return deadLetter{Subject: m.Subject, Headers: h, Body: string(m.Data)}
}

// TestMaxDeliveries: a message its consumer keeps failing is dead-lettered
// once MaxDeliver is used up, counted and logged, and the consumer goes on
// with the next one.
func TestMaxDeliveries(t *testing.T) {
	e := newEnv(t)
	e.start()
	before := Count()
	c := e.consumer("poison-test", 2)
	const bad, good = "0b7e6c55-3f1e-4a8e-9f63-2d1f5c8e9a01", "7c2d4f1a-5b6e-4c3d-8a9b-0e1f2a3b4c5d"
	body, seq := e.request(bad)
	for range 2 {
		m := e.next(c)
		if events.TrackingIDOf(m.Subject()) != bad {
			t.Fatalf("got %s, want the bad message", m.Subject())
		}
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	e.request(good)
	// The server reads a Nak on a queue of its own, so the last one may reach
	// it after the pull that brings the good message: the bad message then
	// gives out at the next pull, as it would with a service that keeps
	// pulling. Pull until both have happened.
	var gotGood bool
	e.eventually("the good message, then 1 dead letter", func() bool {
		batch, err := c.FetchNoWait(1)
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if id := events.TrackingIDOf(m.Subject()); id != good {
				t.Fatalf("after the bad message gave out: got %s, want the good one", m.Subject())
			}
			if err := m.DoubleAck(context.Background()); err != nil {
				t.Fatal(err)
			}
			gotGood = true
		}
		return gotGood && len(e.dlq()) > 0
	})

	got := e.waitDLQ(1)
	want := deadLetter{
		Subject: "stkdlq.poison-test." + bad,
		Headers: map[string]string{
			events.DeadLetterHeaderReason:     "max_deliveries",
			events.DeadLetterHeaderConsumer:   "poison-test",
			events.DeadLetterHeaderStream:     "STK",
			events.DeadLetterHeaderStreamSeq:  fmt.Sprint(seq),
			events.DeadLetterHeaderDeliveries: "2",
			events.DeadLetterHeaderSubject:    "stk.requested." + bad,
			events.DeadLetterHeaderTrackingID: bad,
			events.DeadLetterHeaderOriginalID: bad + ":requested",
			jetstream.MsgIDHeader:             fmt.Sprintf("dlq:poison-test:%d", seq),
		},
		Body: string(body),
	}
	if diff := cmp.Diff(want, view(got[0])); diff != "" {
		t.Errorf("dead letter (-want +got):\n%s", diff)
	}
	e.counted(before, 1)
	if n, err := Stored(context.Background(), e.ns.JS); err != nil || n != 1 {
		t.Errorf("Stored = %d, %v; want 1", n, err)
	}
	logs := e.logs.String()
	for _, s := range []string{`"level":"ERROR"`, `"msg":"message dead-lettered: a consumer gave up on it"`,
		`"tracking_id":"` + bad + `"`, `"consumer":"poison-test"`, `"reason":"max_deliveries"`} {
		if !strings.Contains(logs, s) {
			t.Errorf("logs lack %s:\n%s", s, logs)
		}
	}
}

// TestTerminated: a message a consumer terminates is dead-lettered with the
// reason it gave.
func TestTerminated(t *testing.T) {
	e := newEnv(t)
	e.start()
	before := Count()
	c := e.consumer("term-test", 5)
	const id = "2f9c1b7a-8d4e-4f6a-b3c2-1a0e9d8c7b6a"
	body, seq := e.request(id)
	e.terminate(c, "malformed: tracking id is not a canonical UUID\r\nsecond line")

	got := e.waitDLQ(1)
	want := deadLetter{
		Subject: "stkdlq.term-test." + id,
		Headers: map[string]string{
			events.DeadLetterHeaderReason:     "terminated",
			events.DeadLetterHeaderTermReason: "malformed: tracking id is not a canonical UUID  second line",
			events.DeadLetterHeaderConsumer:   "term-test",
			events.DeadLetterHeaderStream:     "STK",
			events.DeadLetterHeaderStreamSeq:  fmt.Sprint(seq),
			events.DeadLetterHeaderDeliveries: "1",
			events.DeadLetterHeaderSubject:    "stk.requested." + id,
			events.DeadLetterHeaderTrackingID: id,
			events.DeadLetterHeaderOriginalID: id + ":requested",
			jetstream.MsgIDHeader:             fmt.Sprintf("dlq:term-test:%d", seq),
		},
		Body: string(body),
	}
	if diff := cmp.Diff(want, view(got[0])); diff != "" {
		t.Errorf("dead letter (-want +got):\n%s", diff)
	}
	e.counted(before, 1)
	// Counted in the metrics right after Count: waited for too.
	e.eventually("the dead letter in stkgate_dead_letters_total", func() bool {
		return e.metrics.Value("stkgate_dead_letters_total", "consumer", "term-test", "reason", "terminated") == 1
	})
}

// TestRestart: advisories raised while no watcher runs are stored and
// dead-lettered when one starts; handling them all again (the consumer
// lost, say) stores nothing twice; a message gone from STK still gets its
// dead letter.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	stop := e.start()
	stop()

	c := e.consumer("restart-test", 5)
	ids := []string{"11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222", "33333333-3333-4333-8333-333333333333"}
	var goneSeq uint64
	for i, id := range ids {
		_, seq := e.request(id)
		e.terminate(c, "unprocessable")
		if i == 2 {
			goneSeq = seq
		}
	}
	// Terms are not answered: wait until the server has them all, or it
	// reports the deletion of a message still pending as a termination of
	// its own (one more advisory, for the same dead letter).
	e.eventually("the terms are taken", func() bool {
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.AckFloor.Stream == goneSeq
	})
	if err := e.ns.Stream.DeleteMsg(context.Background(), goneSeq); err != nil {
		t.Fatal(err)
	}
	e.eventually("3 advisories stored", func() bool { return e.advisories() == 3 })
	if len(e.dlq()) != 0 {
		t.Fatal("dead letters without a watcher")
	}

	before := Count()
	stop = e.start()
	got := e.waitDLQ(3)
	var subjects []string
	for _, m := range got {
		subjects = append(subjects, m.Subject)
	}
	want := []string{"stkdlq.restart-test." + ids[0], "stkdlq.restart-test." + ids[1], "stkdlq.restart-test.unknown"}
	if diff := cmp.Diff(want, subjects); diff != "" {
		t.Errorf("dead letters (-want +got):\n%s", diff)
	}
	gone := view(got[2])
	if gone.Body != "" || gone.Headers[events.DeadLetterHeaderMissing] != "not in stream STK" ||
		gone.Headers[events.DeadLetterHeaderStreamSeq] != fmt.Sprint(goneSeq) || gone.Headers[events.DeadLetterHeaderReason] != "terminated" {
		t.Errorf("dead letter of a message gone from STK: %+v", gone)
	}
	e.counted(before, 3)
	stop()

	// Every advisory handled again: nothing new.
	if err := e.ns.JS.DeleteConsumer(context.Background(), events.AdvisoryStreamName, events.ConsumerDeadLetter); err != nil {
		t.Fatal(err)
	}
	before = Count()
	e.start()
	e.eventually("the advisories handled again", func() bool {
		return strings.Count(e.logs.String(), `"msg":"dead letter already stored"`) == 3
	})
	if n := len(e.dlq()); n != 3 {
		t.Errorf("%d dead letters, want 3", n)
	}
	if n := Count() - before; n != 0 {
		t.Errorf("counted %d again", n)
	}
}

// TestUnreadableAdvisory: something on an advisory subject that is not an
// advisory is set aside, and the watcher goes on.
func TestUnreadableAdvisory(t *testing.T) {
	e := newEnv(t)
	e.start()
	if err := e.ns.Conn.Publish(events.AdvisoryTerminatedPrefix+".STK.fake", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	c := e.consumer("after-garbage", 5)
	const id = "44444444-4444-4444-8444-444444444444"
	e.request(id)
	e.terminate(c, "bad")
	got := e.waitDLQ(1)
	if got[0].Subject != "stkdlq.after-garbage."+id {
		t.Errorf("dead letter on %s", got[0].Subject)
	}
	if !strings.Contains(e.logs.String(), `"msg":"unreadable advisory; terminated"`) {
		t.Errorf("not logged:\n%s", e.logs.String())
	}
}

// TestDeadLetterStreamGone: a deleted STK_DLQ is made again and the dead
// letter stored, after a retry.
func TestDeadLetterStreamGone(t *testing.T) {
	e := newEnv(t)
	e.start()
	if err := e.ns.JS.DeleteStream(context.Background(), events.DeadLetterStreamName); err != nil {
		t.Fatal(err)
	}
	c := e.consumer("gone-test", 5)
	const id = "55555555-5555-4555-8555-555555555555"
	e.request(id)
	e.terminate(c, "bad")
	e.eventually("STK_DLQ made again", func() bool {
		_, err := e.ns.JS.Stream(context.Background(), events.DeadLetterStreamName)
		return err == nil
	})
	got := e.waitDLQ(1)
	if got[0].Subject != "stkdlq.gone-test."+id {
		t.Errorf("dead letter on %s", got[0].Subject)
	}
	if !strings.Contains(e.logs.String(), `"msg":"dead letter not stored; retrying"`) {
		t.Errorf("the failed attempt was not logged:\n%s", e.logs.String())
	}
}

func TestStoredWithoutStream(t *testing.T) {
	ns := natstest.Start(t)
	if n, err := Stored(context.Background(), ns.JS); err != nil || n != 0 {
		t.Errorf("Stored = %d, %v; want 0", n, err)
	}
}

func TestRunNeedsJetStream(t *testing.T) {
	if err := Run(context.Background(), Config{}); err == nil {
		t.Error("Run without JS: no error")
	}
}

// TestRunRefusesReplicas: a definition JetStream refuses is an error, not an
// endless wait.
func TestRunRefusesReplicas(t *testing.T) {
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Run(ctx, Config{JS: ns.JS, Replicas: 3, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || ctx.Err() != nil {
		t.Errorf("Run with 3 replicas on one server: %v (ctx %v)", err, ctx.Err())
	}
}

// TestParseAdvisory reads advisories as nats-server writes them.
func TestParseAdvisory(t *testing.T) {
	at := time.Date(2024, 3, 21, 11, 30, 1, 0, time.UTC)
	exceeded, _ := json.Marshal(server.JSConsumerDeliveryExceededAdvisory{
		TypedEvent: server.TypedEvent{Type: server.JSConsumerDeliveryExceededAdvisoryType, ID: "a1", Time: at},
		Stream:     "STK", Consumer: "projector", StreamSeq: 7, Deliveries: 20,
	})
	terminated, _ := json.Marshal(server.JSConsumerDeliveryTerminatedAdvisory{
		TypedEvent: server.TypedEvent{Type: server.JSConsumerDeliveryTerminatedAdvisoryType, ID: "a2", Time: at},
		Stream:     "STK", Consumer: "dispatcher", ConsumerSeq: 3, StreamSeq: 9, Deliveries: 1, Reason: "malformed",
	})
	maxSubj := events.AdvisoryMaxDeliveriesPrefix + ".STK.projector"
	termSubj := events.AdvisoryTerminatedPrefix + ".STK.dispatcher"
	tests := []struct {
		name     string
		subject  string
		body     []byte
		want     advisory.Advisory
		wantKind string
	}{
		{"max deliveries", maxSubj, exceeded,
			advisory.Advisory{Type: server.JSConsumerDeliveryExceededAdvisoryType, ID: "a1", Time: at, Stream: "STK", Consumer: "projector", StreamSeq: 7, Deliveries: 20},
			"max_deliveries"},
		{"terminated", termSubj, terminated,
			advisory.Advisory{Type: server.JSConsumerDeliveryTerminatedAdvisoryType, ID: "a2", Time: at, Stream: "STK", Consumer: "dispatcher", StreamSeq: 9, Deliveries: 1, Reason: "malformed"},
			"terminated"},
		{"type and subject disagree", termSubj, exceeded, advisory.Advisory{}, ""},
		{"not JSON", termSubj, []byte("{"), advisory.Advisory{}, ""},
		{"another stream", termSubj, bytes.Replace(terminated, []byte(`"STK"`), []byte(`"OTHER"`), 1), advisory.Advisory{}, ""},
		{"no sequence", termSubj, bytes.Replace(terminated, []byte(`"stream_seq":9`), []byte(`"stream_seq":0`), 1), advisory.Advisory{}, ""},
		{"consumer not a token", termSubj, bytes.Replace(terminated, []byte(`"dispatcher"`), []byte(`"a.b"`), 1), advisory.Advisory{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, kind, err := advisory.Parse(tt.subject, tt.body)
			if tt.wantKind == "" {
				if err == nil {
					t.Errorf("accepted: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if kind != tt.wantKind {
				t.Errorf("kind %q, want %q", kind, tt.wantKind)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine(" a\r\nb\x00 "); got != "a  b" {
		t.Errorf("oneLine = %q", got)
	}
	if got := len(oneLine(strings.Repeat("x", 5000))); got != 1024 {
		t.Errorf("oneLine kept %d bytes", got)
	}
}

// logtest.Buffer collects log lines written from several goroutines.
