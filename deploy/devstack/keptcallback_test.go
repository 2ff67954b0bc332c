package devstack_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	callback "github.com/stkgate/stkgate/callback-ingest"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/failpoint"
	"github.com/stkgate/stkgate/events/testkit/servertest"
)

// The environment of TestCallbackHandlerProcess.
const (
	childNATS = "STKGATE_TEST_CHILD_NATS_URL"
	childAddr = "STKGATE_TEST_CHILD_ADDR"
)

// TestCallbackHandlerProcess serves callback-ingest's callback handler in a
// process of its own, for TestCallbackIngestKilledAfterKeepE2E; skipped
// otherwise.
func TestCallbackHandlerProcess(t *testing.T) {
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
	secrets, err := events.ParseCallbackSecrets(e2eCallbackSecret)
	if err != nil {
		t.Fatal(err)
	}
	h, err := callback.NewHandler(callback.Options{JS: js, Stream: stream, Conn: nc, Secrets: secrets,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Fatal(http.ListenAndServe(os.Getenv(childAddr), h))
}

// TestCallbackIngestKilledAfterKeepE2E: the callback-ingest instance that
// receives a success callback is killed between keeping it and publishing
// its outcome (the failpoint callback-after-keep, as `make chaos` uses it).
// The payment still ends Success with its receipt: the applier of the
// instance that lives on applies the kept callback.
//
// The dev stack runs every service in one process, where a failpoint's exit
// would end the test; so the instance that is killed is a process of its
// own (callback-ingest's handler, started from this test binary), the one
// CALLBACK_BASE_URL names, and the dev stack's own callback-ingest is the
// instance that lives on. The killed process runs no applier: one killed
// while holding kept callbacks would hold them until the consumer's AckWait
// (30 s) passed, which the applier of the next instance then applies — the
// same end, later than this test should take.
func TestCallbackIngestKilledAfterKeepE2E(t *testing.T) {
	t.Parallel()
	cbAddr := servertest.FreeAddr(t)
	s := startStack(t, map[string]string{
		"CALLBACK_BASE_URL":    "http://" + cbAddr,
		"CALLBACK_APPLY_AFTER": "500ms",
	})
	cmd := exec.Command(os.Args[0], "-test.run=^TestCallbackHandlerProcess$")
	cmd.Env = append(os.Environ(), childNATS+"="+s.nats.URL, childAddr+"="+cbAddr,
		failpoint.Env+"="+failpoint.CallbackAfterKeep+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // when it is still running
		<-exited
	})
	waitListening(t, cbAddr)

	const phone = "0712345621"
	s.fake.Script("254"+phone[1:], darajatest.Script{ResultCode: "0", CallbackDelay: -1})
	id := s.accept(t, phone)
	select {
	case <-exited:
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) || ee.ExitCode() != failpoint.ExitCode {
			t.Fatalf("callback-ingest exited with %v, want status %d\n%s", waitErr, failpoint.ExitCode, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("callback-ingest was not killed after keeping the callback\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "callback kept") {
		t.Fatalf("the killed instance had not kept the callback:\n%s", stderr.String())
	}

	data := s.waitFinal(t, id)
	if data["status_label"] != "Success" || data["response_code"] != "0" {
		t.Errorf("final %v, want Success", data)
	}
	ev := s.completedEvent(t, id)
	if ev.Source != events.SourceCallback || !receiptRE.MatchString(ev.Receipt) {
		t.Errorf("stk.completed %+v, want the callback's, with its receipt", ev)
	}
	if data["transaction_code"] != ev.Receipt {
		t.Errorf("transaction_code %v, want the receipt %s", data["transaction_code"], ev.Receipt)
	}
}

// TestCallbackMatchingFailedE2E: while callback-ingest cannot read the STK
// stream (JetStream stops answering its direct gets), a success callback
// arrives; it is kept, not applied, and answered 503. Once the stream
// answers again the applier applies it: Success with its receipt.
func TestCallbackMatchingFailedE2E(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"CALLBACK_APPLY_AFTER": "500ms"})
	const phone = "0712345622"
	s.fake.Script("254"+phone[1:], darajatest.Script{ResultCode: "0", CallbackDelay: time.Hour})
	id := s.accept(t, phone)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.fake.WaitPushes(ctx, 1, darajatest.WithCallbackURL(s.callbackURL(id))); err != nil {
		t.Fatal(err)
	}

	// The fault: the STK stream stops answering direct gets, which every
	// lookup of callback-ingest's matching is.
	noDirect := events.StreamConfig(1)
	noDirect.AllowDirect = false
	if _, err := s.nats.JS.UpdateStream(ctx, noDirect); err != nil {
		t.Fatal(err)
	}
	before := len(s.fake.Callbacks())
	s.fake.Flush() // the callback goes now
	got, err := s.fake.WaitCallbacks(ctx, before+1)
	if err != nil {
		t.Fatal(err)
	}
	if d := got[len(got)-1]; d.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("callback answered %d %s, want 503 (matching failed)", d.StatusCode, d.ResponseBody)
	}
	if n := completions(t, s, id); n != 0 {
		t.Fatalf("%d stk.completed while matching could not read the stream", n)
	}

	if _, err := s.nats.JS.UpdateStream(ctx, events.StreamConfig(1)); err != nil {
		t.Fatal(err)
	}
	data := s.waitFinal(t, id)
	if data["status_label"] != "Success" {
		t.Errorf("final %v, want Success", data)
	}
	ev := s.completedEvent(t, id)
	if ev.Source != events.SourceCallback || !receiptRE.MatchString(ev.Receipt) {
		t.Errorf("stk.completed %+v, want the callback's, with its receipt", ev)
	}
	if data["transaction_code"] != ev.Receipt {
		t.Errorf("transaction_code %v, want the receipt %s", data["transaction_code"], ev.Receipt)
	}
}

// completions counts the stk.completed stored for id.
func completions(t *testing.T, s *stack, id string) uint64 {
	t.Helper()
	subject := events.Subject(events.TypeCompleted, id)
	info, err := s.nats.Stream.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// waitListening waits until something accepts connections on addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
