package callback

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/failpoint"
	"github.com/stkgate/stkgate/events/testkit/servertest"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// testApplyAfter is the handler's head start in these tests.
const testApplyAfter = 200 * time.Millisecond

// startApplier runs an applier over e's streams until the test ends.
func (e *testEnv) startApplier() {
	e.t.Helper()
	a, err := NewApplier(Options{JS: e.ns.JS, Stream: e.ns.Stream, Conn: e.ns.Conn, Secrets: testSecrets,
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), Now: func() time.Time { return clock }}, testApplyAfter)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("applier: %v", err)
		}
	})
}

// waitApplied waits until the callback-apply consumer has acked everything
// kept: the applier has settled every kept callback for good.
func (e *testEnv) waitApplied() {
	e.t.Helper()
	wait.For(e.t, "the applier to settle every kept callback", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := e.ns.JS.Consumer(ctx, events.CallbackStreamName, events.ConsumerCallbackApply)
		if err != nil {
			return false
		}
		// The last callback kept: the consumer's ack floor must have
		// passed it (its counts alone can read settled before a just
		// created consumer has counted what it must deliver).
		last, err := e.callbackStream().GetLastMsgForSubject(ctx, events.CallbackSubjectReceived("*"))
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.AckFloor.Stream >= last.Sequence &&
			info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
	})
}

// keepRaw stores a callback on stkcb.received.<id> as the handler keeps it,
// and nothing else: what a callback-ingest killed between keep and publish
// leaves.
func (e *testEnv) keepRaw(id, reason string, body []byte) {
	e.t.Helper()
	in := &delivery{id: uuid.NewString(), trackingID: id, body: body}
	h, err := newHandler(Options{JS: e.ns.JS, Stream: e.ns.Stream, Conn: e.ns.Conn, Secrets: testSecrets,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		e.t.Fatal(err)
	}
	in.headers = map[string][]string{events.CallbackHeaderID: {in.id}, events.CallbackHeaderTrackingID: {id}}
	req, _ := http.NewRequest(http.MethodPost, "/", nil)
	if !h.keep(req, slog.New(slog.DiscardHandler), in, "", reason) {
		e.t.Fatal("keep failed")
	}
}

// completedEvent is the stored stk.completed of id.
func (e *testEnv) completedEvent(id string) events.Completed {
	e.t.Helper()
	n, msg := e.completed(id)
	if n != 1 {
		e.t.Fatalf("%d stk.completed, want 1", n)
	}
	_, ev, err := events.Decode(msg.Data)
	if err != nil {
		e.t.Fatal(err)
	}
	return ev.(events.Completed)
}

// count is how many messages the STK stream holds on subject.
func (e *testEnv) count(subject string) int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := e.ns.Stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// TestApplierAppliesKeptCallback: a callback kept but never published (the
// service died in between) is applied by the applier, once, with its
// receipt.
func TestApplierAppliesKeptCallback(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.requestDispatched(payment(id))
	e.keepRaw(id, "", readFixture(t, "success"))
	if n, _ := e.completed(id); n != 0 {
		t.Fatalf("%d stk.completed before the applier ran", n)
	}
	e.startApplier()
	wait.For(t, "stk.completed", func() bool { n, _ := e.completed(id); return n == 1 })
	c := e.completedEvent(id)
	if c.ResultCode != "0" || c.Receipt != "SCL4XQ2B7K" || c.Source != events.SourceCallback || c.TransactionDate == "" {
		t.Errorf("applied %+v", c)
	}
	e.waitApplied()
	if n, _ := e.completed(id); n != 1 {
		t.Errorf("%d stk.completed, want 1", n)
	}
}

// paid is a dispatched payment whose success callback (a receipt of its
// own) the handler has taken and answered as accepted.
func (e *testEnv) paid() string {
	e.t.Helper()
	id := uuid.NewString()
	e.requestDispatched(payment(id))
	body := []byte(freshReceipt(string(readFixture(e.t, "success"))))
	if status, got := e.post(http.MethodPost, id, bytes.NewReader(body)); status != 200 || got != bodyAccepted {
		e.t.Fatalf("answer %d %s", status, got)
	}
	return id
}

// TestApplierQuietOverAnAppliedCallback: a callback the handler applied
// (every callback, normally) is settled by the applier without a line at
// info level: the handler logged its outcome, and a line per callback
// twice over cost the applier a good part of its CPU.
func TestApplierQuietOverAnAppliedCallback(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	e.startApplier()
	id := e.paid()
	e.waitApplied()
	if n, _ := e.completed(id); n != 1 {
		t.Errorf("%d stk.completed, want 1", n)
	}
	for line := range strings.Lines(e.logs.String()) {
		if strings.Contains(line, `"applier":true`) {
			t.Errorf("the applier logged over an applied callback: %s", line)
		}
	}
}

// TestCompletedNamesItsKeptCallback: the stk.completed the handler
// publishes names the kept copy it was published from
// (events.CallbackHeaderID), and the applier settles that copy from the
// name alone (appliedFrom): the outcome was published from that very
// callback, so match would decide nothing. Another copy's name, or none,
// is no such proof.
func TestCompletedNamesItsKeptCallback(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := e.paid()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kept, err := e.callbackStream().GetLastMsgForSubject(ctx, events.CallbackSubjectReceived(id))
	if err != nil {
		t.Fatal(err)
	}
	keptID := kept.Header.Get(events.CallbackHeaderID)
	_, done := e.completed(id)
	if got := done.Header.Get(events.CallbackHeaderID); got == "" || got != keptID {
		t.Fatalf("stk.completed names callback %q, want the kept copy's %q", got, keptID)
	}
	a, err := NewApplier(Options{JS: e.ns.JS, Stream: e.ns.Stream, Conn: e.ns.Conn, Secrets: testSecrets,
		Logger: slog.New(slog.DiscardHandler)}, testApplyAfter)
	if err != nil {
		t.Fatal(err)
	}
	if !a.appliedFrom(ctx, id, keptID) {
		t.Error("appliedFrom the kept copy = false, want true")
	}
	for _, other := range []string{uuid.NewString(), ""} {
		if a.appliedFrom(ctx, id, other) {
			t.Errorf("appliedFrom %q = true, want false", other)
		}
	}
}

// TestApplierAfterPublishFailed: the handler kept the callback but could
// not publish its outcome (the STK stream refused it); once the stream takes
// messages again the applier publishes it.
func TestApplierAfterPublishFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.requestDispatched(payment(id))
	ctx := context.Background()
	full := events.StreamConfig(1)
	full.MaxMsgs = 1
	full.Discard = jetstream.DiscardNew
	if _, err := e.ns.JS.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	e.startApplier()
	if status, _ := e.post(http.MethodPost, id, bytes.NewReader(readFixture(t, "success"))); status != 503 {
		t.Fatalf("answer %d, want 503", status)
	}
	if _, err := e.ns.JS.UpdateStream(ctx, events.StreamConfig(1)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "stk.completed", func() bool { n, _ := e.completed(id); return n == 1 })
	if c := e.completedEvent(id); c.Receipt != "SCL4XQ2B7K" {
		t.Errorf("applied %+v", c)
	}
}

// TestApplierAfterFailedLookup: matching could not read the STK stream (it
// was gone), so the callback was kept for the applier and not applied; once
// the stream is back the applier applies it. On main such a callback was
// kept as stkcb.unmatched.unverified and never applied.
func TestApplierAfterFailedLookup(t *testing.T) {
	t.Parallel()
	e := newEnv(t, time.Second)
	id := uuid.NewString()
	ctx := context.Background()
	if err := e.ns.JS.DeleteStream(ctx, events.StreamName); err != nil {
		t.Fatal(err)
	}
	e.startApplier()
	if status, _ := e.post(http.MethodPost, id, bytes.NewReader(readFixture(t, "success"))); status != 503 {
		t.Fatalf("answer %d, want 503", status)
	}
	kept, _, _ := e.keptSince(0)
	if len(kept) != 1 || kept[0].Subject != events.CallbackSubjectReceived(id) || kept[0].Headers[events.CallbackHeaderReason] != reasonUnverified {
		t.Fatalf("kept %+v, want one on %s with reason %s", kept, events.CallbackSubjectReceived(id), reasonUnverified)
	}
	// The stream comes back (restored with the payment's events).
	if _, err := events.EnsureStream(ctx, e.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	e.requestDispatched(payment(id))
	wait.For(t, "stk.completed", func() bool { n, _ := e.completed(id); return n == 1 })
	if c := e.completedEvent(id); c.Receipt != "SCL4XQ2B7K" || c.ResultCode != "0" {
		t.Errorf("applied %+v", c)
	}
}

// TestLateCallback: a callback for a payment stkgate finished as Unknown
// (stkgate.no_answer) is published as stk.late_result, never as a second
// stk.completed, and kept with the reason late_result; the applier and a
// repeat of the callback publish nothing more. A callback after Daraja's
// own outcome changes nothing.
func TestLateCallback(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.requestDispatched(payment(id))
	noAnswer := events.Completed{Payment: payment(id), ResultCode: events.CodeNoAnswer, ResultDesc: "no answer",
		Source: events.SourceDispatcher, CompletedAt: clock}
	e.publish("stkgate/reconciler", noAnswer)
	e.startApplier()

	before := e.lastKept()
	for range 2 {
		status, body := e.post(http.MethodPost, id, bytes.NewReader(readFixture(t, "success")))
		if status != http.StatusOK || body != bodyAccepted {
			t.Fatalf("answer %d %s", status, body)
		}
	}
	kept, _, _ := e.keptSince(before)
	if len(kept) != 2 || kept[0].Subject != events.CallbackSubjectReceived(id) || kept[0].Headers[events.CallbackHeaderReason] != reasonLate {
		t.Fatalf("kept %+v", kept)
	}
	e.waitApplied()
	if c := e.completedEvent(id); c.ResultCode != events.CodeNoAnswer {
		t.Errorf("the final outcome moved: %+v", c)
	}
	if n := e.count(events.Subject(events.TypeLateResult, id)); n != 1 {
		t.Fatalf("%d stk.late_result, want 1", n)
	}
	msg, err := e.ns.Stream.GetLastMsgForSubject(context.Background(), events.Subject(events.TypeLateResult, id))
	if err != nil {
		t.Fatal(err)
	}
	env, ev, err := events.Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	want := events.LateResult{
		Payment:           payment(id),
		FollowsCode:       events.CodeNoAnswer,
		ResultCode:        "0",
		ResultDesc:        "The service request is processed successfully.",
		Receipt:           "SCL4XQ2B7K",
		TransactionDate:   "2024-03-21 14:30:55",
		Source:            events.SourceCallback,
		MerchantRequestID: "6e86-45dd-91ac-fd5d4178ab523002867",
		CheckoutRequestID: successCheckoutID,
		LearntAt:          clock,
	}
	if got := ev.(events.LateResult); got != want || env.Source != EventSource {
		t.Errorf("stk.late_result from %s:\n got %+v\nwant %+v", env.Source, got, want)
	}

	// After Daraja's own outcome, a differing callback changes nothing.
	other := uuid.NewString()
	e.requestDispatched(payment(other))
	e.publish("stkgate/reconciler", events.Completed{Payment: payment(other), ResultCode: "1032", ResultDesc: "cancelled",
		Source: events.SourceQuery, CompletedAt: clock})
	if status, _ := e.post(http.MethodPost, other, bytes.NewReader(readFixture(t, "success"))); status != http.StatusOK {
		t.Fatalf("answer %d", status)
	}
	e.waitApplied()
	if n := e.count(events.Subject(events.TypeLateResult, other)); n != 0 {
		t.Errorf("%d stk.late_result after Daraja's own outcome", n)
	}
	if c := e.completedEvent(other); c.ResultCode != "1032" {
		t.Errorf("outcome moved: %+v", c)
	}
}

// TestApplierLateResultAfterCrash: a late callback kept but whose
// stk.late_result was never published is published by the applier.
func TestApplierLateResultAfterCrash(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.requestDispatched(payment(id))
	e.publish("stkgate/reconciler", events.Completed{Payment: payment(id), ResultCode: events.CodeNoAnswer,
		ResultDesc: "no answer", Source: events.SourceDispatcher, CompletedAt: clock})
	e.keepRaw(id, reasonLate, readFixture(t, "success"))
	e.startApplier()
	wait.For(t, "stk.late_result", func() bool { return e.count(events.Subject(events.TypeLateResult, id)) == 1 })
	if c := e.completedEvent(id); c.ResultCode != events.CodeNoAnswer {
		t.Errorf("the final outcome moved: %+v", c)
	}
}

// TestApplierLateUnconfirmedSuccessKeptForOperator: a success callback that
// would need confirming (its amount differs from the request's) for a push
// whose answer was lost (no stk.dispatched: nothing to query) ends as the
// reconciler hands it back once the payment is Unknown: kept on
// stkcb.received.<id> as a late result. The applier does not publish it
// (a late Success would show the payment paid with the callback's receipt):
// it copies it to stkcb.unmatched.late_unconfirmed.<id> for an operator;
// the outcome stays, and it is not held for confirmation again.
func TestApplierLateUnconfirmedSuccessKeptForOperator(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	p := payment(id)
	p.Amount = 1000 // the callback says 1500
	e.request(p)
	e.noAnswer(p)
	e.keepRaw(id, events.CallbackReasonLate, readFixture(t, "success"))
	e.startApplier()
	e.waitApplied()
	unmatched := events.CallbackSubjectRefused(events.UnmatchedLateUnconfirmed, id)
	m, err := e.callbackStream().GetLastMsgForSubject(context.Background(), unmatched)
	if err != nil {
		t.Fatalf("not kept on %s: %v", unmatched, err)
	}
	if got := m.Header.Get(events.CallbackHeaderReason); got != events.UnmatchedLateUnconfirmed {
		t.Errorf("kept with reason %q", got)
	}
	if lates := e.lateResults(id); len(lates) != 0 {
		t.Errorf("published as a late result: %+v", lates)
	}
	if c := e.completedEvent(id); c.ResultCode != events.CodeNoAnswer {
		t.Errorf("the final outcome moved: %+v", c)
	}
	if n := e.count(events.CallbackSubjectConfirm(id)); n != 0 {
		t.Errorf("%d copies held for confirmation again, want none", n)
	}
}

// TestApplierRepeatedRuns: running the applier again over every kept
// callback (its consumer deleted and made anew, as after an operator's
// reset) publishes nothing more.
func TestApplierRepeatedRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	applied, late := uuid.NewString(), uuid.NewString()
	e.requestDispatched(payment(applied))
	e.requestDispatched(payment(late))
	e.publish("stkgate/reconciler", events.Completed{Payment: payment(late), ResultCode: events.CodeNoAnswer,
		ResultDesc: "no answer", Source: events.SourceDispatcher, CompletedAt: clock})
	// A receipt is one payment's, the late one's too (freshReceipt).
	bodies := map[string]string{applied: string(readFixture(t, "success")), late: freshReceipt(string(readFixture(t, "success")))}
	for _, id := range []string{applied, late} {
		if status, _ := e.post(http.MethodPost, id, strings.NewReader(bodies[id])); status != http.StatusOK {
			t.Fatalf("answer %d", status)
		}
	}
	e.keepRaw(applied, "", readFixture(t, "success")) // as if kept twice
	for run := range 3 {
		if run > 0 {
			if err := e.ns.JS.DeleteConsumer(context.Background(), events.CallbackStreamName, events.ConsumerCallbackApply); err != nil {
				t.Fatal(err)
			}
		}
		func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			a, err := NewApplier(Options{JS: e.ns.JS, Stream: e.ns.Stream, Conn: e.ns.Conn, Secrets: testSecrets,
				Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), Now: func() time.Time { return clock.Add(time.Duration(run) * time.Hour) }}, testApplyAfter)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			e.waitApplied()
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}()
	}
	if n, _ := e.completed(applied); n != 1 {
		t.Errorf("%d stk.completed, want 1", n)
	}
	if n := e.count(events.Subject(events.TypeLateResult, late)); n != 1 {
		t.Errorf("%d stk.late_result, want 1", n)
	}
	if n, _ := e.completed(late); n != 1 {
		t.Errorf("%d stk.completed for the late one, want 1", n)
	}
}

// childEnv names the environment of TestCallbackIngestProcess.
const (
	childNATS = "STKGATE_TEST_CHILD_NATS_URL"
	childAddr = "STKGATE_TEST_CHILD_ADDR"
)

// TestCallbackIngestProcess serves callback-ingest's handler in a process
// of its own for TestCrashBetweenKeepAndPublish; it is skipped otherwise.
// Its applier is left out: a crashed applier holds the messages it had
// taken until the consumer's AckWait (30 s) has passed, longer than this
// test should take; the applier of the next instance is the parent's.
func TestCallbackIngestProcess(t *testing.T) {
	t.Parallel()
	if os.Getenv(childNATS) == "" {
		t.Skip("only run as a child process")
	}
	nc, err := nats.Connect(os.Getenv(childNATS))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(Options{JS: js, Stream: stream, Conn: nc, Secrets: testSecrets,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Fatal(http.ListenAndServe(os.Getenv(childAddr), h))
}

// TestCrashBetweenKeepAndPublish: a callback-ingest process killed between
// keeping a callback and publishing its outcome (the failpoint
// callback-after-keep, as `make chaos` uses it) loses nothing: the applier
// of the next instance applies the kept callback, with its receipt.
func TestCrashBetweenKeepAndPublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.requestDispatched(payment(id))

	addr := servertest.FreeAddr(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCallbackIngestProcess$")
	cmd.Env = append(os.Environ(), childNATS+"="+e.ns.URL, childAddr+"="+addr,
		failpoint.Env+"="+failpoint.CallbackAfterKeep+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	base := "http://" + addr
	wait.For(t, "the child to be ready", func() bool {
		res, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	if _, err := http.Post(base+RoutePrefix+tokenPath(id), "application/json", bytes.NewReader(readFixture(t, "success"))); err == nil {
		t.Error("the child answered; it should have crashed after keeping the callback")
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != failpoint.ExitCode {
			t.Fatalf("child exited with %v, want status %d\n%s", err, failpoint.ExitCode, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the child did not crash")
	}
	if !strings.Contains(stderr.String(), "failpoint "+failpoint.CallbackAfterKeep) {
		t.Errorf("child's stderr lacks the failpoint:\n%s", stderr.String())
	}
	if n, _ := e.completed(id); n != 0 {
		t.Fatalf("%d stk.completed after the crash; the crash came too late", n)
	}
	kept, _, _ := e.keptSince(0)
	if len(kept) != 1 || kept[0].Subject != events.CallbackSubjectReceived(id) {
		t.Fatalf("kept %+v", kept)
	}

	e.startApplier() // the next instance
	wait.For(t, "stk.completed", func() bool { n, _ := e.completed(id); return n == 1 })
	if c := e.completedEvent(id); c.Receipt != "SCL4XQ2B7K" || c.ResultCode != "0" {
		t.Errorf("applied %+v", c)
	}
}

// TestCompletionRacedByNoAnswer: the reconciler's stkgate.no_answer is
// stored between matching (no outcome yet) and the callback's publish,
// which JetStream then drops as a duplicate: the callback becomes the
// payment's stk.late_result rather than vanish.
func TestCompletionRacedByNoAnswer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.requestDispatched(payment(id))
	h, err := newHandler(Options{JS: e.ns.JS, Stream: e.ns.Stream, Conn: e.ns.Conn, Secrets: testSecrets,
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := ParseCallback(readFixture(t, "success"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := h.match(ctx, slog.New(slog.DiscardHandler), id, cb, clock)
	if !m.publish {
		t.Fatalf("matched %+v, want publish", m)
	}
	e.publish("stkgate/reconciler", events.Completed{Payment: payment(id), ResultCode: events.CodeNoAnswer,
		ResultDesc: "no answer", Source: events.SourceDispatcher, CompletedAt: clock})
	if err := h.apply(ctx, slog.New(slog.DiscardHandler), m, cb, ""); err != nil {
		t.Fatal(err)
	}
	if c := e.completedEvent(id); c.ResultCode != events.CodeNoAnswer {
		t.Errorf("final outcome %+v", c)
	}
	if n := e.count(events.Subject(events.TypeLateResult, id)); n != 1 {
		t.Errorf("%d stk.late_result, want 1", n)
	}
}

func TestApplierRetryDelay(t *testing.T) {
	t.Parallel()
	for n, want := range map[uint64]time.Duration{0: 2 * time.Second, 1: 2 * time.Second, 2: 4 * time.Second, 5: 32 * time.Second, 6: time.Minute, 1000: time.Minute} {
		if got := retryDelay(n); got != want {
			t.Errorf("retryDelay(%d) = %s, want %s", n, got, want)
		}
	}
}

// The callback-apply consumer deleted under a running applier is created
// again: a callback kept afterwards is still applied.
func TestApplierConsumerDeletedIsCreatedAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	e.startApplier()
	ctx := context.Background()
	wait.For(t, "the applier's consumer", func() bool {
		_, err := e.ns.JS.Consumer(ctx, events.CallbackStreamName, events.ConsumerCallbackApply)
		return err == nil
	})
	if err := e.ns.JS.DeleteConsumer(ctx, events.CallbackStreamName, events.ConsumerCallbackApply); err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	e.requestDispatched(payment(id))
	e.keepRaw(id, "", readFixture(t, "success"))
	wait.For(t, "stk.completed through the recreated consumer", func() bool { n, _ := e.completed(id); return n == 1 })
}
