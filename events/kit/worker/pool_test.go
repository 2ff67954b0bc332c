package worker

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events/kit/metrics"
)

// reportMsg is a message that records what is sent of it, in order: "wpi"
// (a progress report), "nak", "ack", "term". inProgress, when set, is
// called in each report before it is recorded (to hold one under way);
// doubleAck, when set, answers each DoubleAck.
type reportMsg struct {
	jetstream.Msg // nil: a method not defined here is not expected
	mu            sync.Mutex
	sent          []string
	inProgress    func()
	doubleAck     func(context.Context) error
}

func (m *reportMsg) record(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent = append(m.sent, s)
}

func (m *reportMsg) log() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.sent)
}

func (m *reportMsg) Subject() string { return "stk.requested.x" }
func (m *reportMsg) InProgress() error {
	if m.inProgress != nil {
		m.inProgress()
	}
	m.record("wpi")
	return nil
}
func (m *reportMsg) Ack() error                       { m.record("ack"); return nil }
func (m *reportMsg) Nak() error                       { m.record("nak"); return nil }
func (m *reportMsg) NakWithDelay(time.Duration) error { m.record("nak"); return nil }
func (m *reportMsg) Term() error                      { m.record("term"); return nil }
func (m *reportMsg) TermWithReason(string) error      { m.record("term"); return nil }
func (m *reportMsg) DoubleAck(ctx context.Context) error {
	if m.doubleAck != nil {
		if err := m.doubleAck(ctx); err != nil {
			return err
		}
	}
	m.record("ack")
	return nil
}

// reportsAfter is how many reports were sent after the first settled.
func reportsAfter(sent []string, settled string) int {
	i := slices.Index(sent, settled)
	if i < 0 {
		return 0
	}
	n := 0
	for _, s := range sent[i+1:] {
		if s == "wpi" {
			n++
		}
	}
	return n
}

// No report follows a nak, however the handler reaches it: the message the
// Pool gives it is wrapped by the metrics (Metrics.Consume) after
// KeepInProgress, and the nak goes through both.
func TestPoolSendsNoReportAfterANak(t *testing.T) {
	for _, reg := range []*metrics.Registry{nil, metrics.New("test")} {
		msg := &reportMsg{}
		p := Pool{Name: "kit", ProgressEvery: time.Millisecond, Metrics: reg}.withDefaults()
		ctx := context.Background()
		p.handle(ctx, ctx, msg, func(_, _ context.Context, m jetstream.Msg) {
			time.Sleep(20 * time.Millisecond) // reports meanwhile
			Nak(p.Log, m, time.Second)
			time.Sleep(20 * time.Millisecond) // the handler goes on a while
		})
		sent := msg.log()
		if !slices.Contains(sent, "wpi") {
			t.Errorf("metrics %v: no report in 20 ms at one every millisecond: %v", reg != nil, sent)
		}
		if n := reportsAfter(sent, "nak"); n > 0 {
			t.Errorf("metrics %v: %d reports after the nak, want none: %v", reg != nil, n, sent)
		}
	}
}

// A nak waits for a report under way: sent after it, the report would undo
// the nak's delay.
func TestKeepInProgressNakWaitsForAReportUnderWay(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	msg := &reportMsg{inProgress: func() {
		once.Do(func() {
			entered <- struct{}{}
			<-release
		})
	}}
	m, stop := KeepInProgress(msg, time.Millisecond)
	defer stop()
	var released sync.Once
	free := func() { released.Do(func() { close(release) }) }
	defer free() // before stop, which waits for the report
	<-entered
	naked := make(chan struct{})
	go func() {
		defer close(naked)
		_ = m.NakWithDelay(time.Second)
	}()
	select {
	case <-naked:
		t.Fatalf("the nak went while a report was under way: %v", msg.log())
	case <-time.After(50 * time.Millisecond):
	}
	free()
	<-naked
	if sent := msg.log(); len(sent) == 0 || sent[len(sent)-1] != "nak" {
		t.Errorf("sent %v, want the nak last", sent)
	}
	stop() // a second stop, after the settlement's, returns
	stop()
}

// An ack that is not confirmed (DoubleAck timed out: NATS slow, a leader
// moving) leaves the message the handler's: the dispatcher retries the ack
// for up to 18 s, and the message stays reported in progress meanwhile, or
// the server could deliver it again to another dispatcher while this one
// still acks it. A report after an ack or a term changes nothing at the
// server (the message is no longer pending); only a nak must stop them
// first.
func TestKeepInProgressReportsWhileAnAckIsRetried(t *testing.T) {
	var tries int
	msg := &reportMsg{doubleAck: func(context.Context) error {
		tries++
		if tries == 1 {
			time.Sleep(10 * time.Millisecond) // the ack's wait for its answer
			return context.DeadlineExceeded
		}
		return nil
	}}
	m, stop := KeepInProgress(msg, time.Millisecond)
	defer stop()
	time.Sleep(5 * time.Millisecond)
	if err := m.DoubleAck(context.Background()); err == nil {
		t.Fatal("the first DoubleAck succeeded")
	}
	before := len(msg.log())
	time.Sleep(30 * time.Millisecond) // the dispatcher's wait before its next try
	during := len(msg.log()) - before
	if err := m.DoubleAck(context.Background()); err != nil {
		t.Fatal(err)
	}
	if during == 0 {
		t.Errorf("no report in the 30 ms between an unconfirmed ack and its retry, at one every millisecond: %v", msg.log())
	}
	// Once DoubleAck has returned no report follows: it waits for the
	// reports to end. Between the ack and then, reports may still go (one
	// every millisecond here; at a load average of 20 the ack's return
	// took longer than that): harmless after an ack.
	after := len(msg.log())
	time.Sleep(10 * time.Millisecond)
	if got := msg.log()[after:]; len(got) > 0 {
		t.Errorf("%v sent after the confirmed ack returned", got)
	}
}
