package callback

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/worker"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// dispatchAt publishes the stk.dispatched of p's push as the dispatcher
// would at time at (its envelope time: when Daraja's answer came back).
func (e *testEnv) dispatchAt(p events.Payment, cb Callback, at time.Time) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pub := events.Publisher{JS: e.ns.JS, Source: "stkgate/dispatcher", Now: func() time.Time { return at }}
	if _, err := pub.Publish(ctx, events.Dispatched{Payment: p, MerchantRequestID: cb.MerchantRequestID,
		CheckoutRequestID: cb.CheckoutRequestID}); err != nil {
		e.t.Fatal(err)
	}
}

// attemptAt writes p's attempt record (STK_ATTEMPTS) as the dispatcher
// would, in state, last written at at; a state "not_sent+503" is not_sent
// after a 503 (Uncertain). checkoutID is Daraja's answer's.
func (e *testEnv) attemptAt(p events.Payment, state, checkoutID string, at time.Time) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := worker.EnsureBucket(ctx, e.ns.JS, events.AttemptsConfig(1))
	if err != nil {
		e.t.Fatal(err)
	}
	state, uncertain := strings.CutSuffix(state, "+503")
	body, err := json.Marshal(events.Attempt{TrackingID: p.TrackingID, State: state, Calls: 1, CheckoutRequestID: checkoutID,
		Uncertain: uncertain, FirstSentAt: at.Add(-100 * time.Millisecond), SentAt: at.Add(-100 * time.Millisecond), UpdatedAt: at})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := kv.Put(ctx, p.TrackingID, body); err != nil {
		e.t.Fatal(err)
	}
}

// TestCallbackFastFailure: a failure callback that comes sooner after its
// push than a customer could read the prompt and answer it (FastFailure,
// measured from stk.dispatched, or, before it, from Daraja's answer as the
// dispatcher's attempt record has it, and from now while the push is on
// its way or none is recorded) is
// not counted: it is kept on stkcb.confirm.<id> with the reason
// confirm_fast_failure for the reconciler's STK query. So is one whose code
// Daraja gives without the customer (1037, 1036): a forger holding the
// CallBackURL can send it as fast. A success is judged by its amount and
// phone, not its speed.
func TestCallbackFastFailure(t *testing.T) {
	t.Parallel()
	const fast = 2 * time.Second
	tests := []struct {
		name    string
		fixture string
		// since is how long before the callback the push was answered
		// (stk.dispatched); negative when the dispatcher's clock is ahead.
		since time.Duration
		// undispatched: no stk.dispatched; since is then from the
		// attempt record's last write, in state attempt ("": none). The
		// request came an hour before the callback: it waited its turn.
		undispatched bool
		attempt      string
		off          bool // FastFailure 0
		held         bool
	}{
		{"cancelled in half a second", "cancelled", 500 * time.Millisecond, false, "", false, true},
		{"cancelled in no time", "cancelled", 0, false, "", false, true},
		{"cancelled before the push by the clocks", "cancelled", -time.Second, false, "", false, true},
		{"insufficient balance in a second", "insufficient", time.Second, false, "", false, true},
		{"wrong PIN in a second", "wrong-pin", time.Second, false, "", false, true},
		{"expired in a second", "expired", time.Second, false, "", false, true},
		{"cancelled at the threshold", "cancelled", fast, false, "", false, false},
		{"cancelled after five seconds", "cancelled", 5 * time.Second, false, "", false, false},
		// Daraja may give these at once, without the customer, but so may
		// a forger with the CallBackURL: held all the same, and the query
		// confirms Daraja's (TestConfirmThroughQuery).
		{"DS timeout at once", "timeout", 100 * time.Millisecond, false, "", false, true},
		{"SMSC ACK timeout at once", "prefixed-desc", 100 * time.Millisecond, false, "", false, true},
		{"success at once", "success", 100 * time.Millisecond, false, "", false, false},
		// Before stk.dispatched (Daraja's answer slow, lost, or not
		// published yet), the request's time says nothing of the push's:
		// a request that waited for its phone an hour was pushed just now.
		{"undispatched, no push recorded", "cancelled", time.Minute, true, "", false, true},
		{"undispatched, push on its way", "cancelled", 10 * time.Second, true, events.AttemptSending, false, true},
		// A record still sending long after the call: its dispatcher
		// died mid-call (the answer lost); the call was over a minute
		// after it left at the latest.
		{"undispatched, sending since two minutes", "cancelled", 2 * time.Minute, true, events.AttemptSending, false, false},
		{"undispatched, accepted half a second ago", "cancelled", 500 * time.Millisecond, true, events.AttemptAccepted, false, true},
		{"undispatched, accepted five seconds ago", "cancelled", 5 * time.Second, true, events.AttemptAccepted, false, false},
		{"undispatched, answer lost a minute ago", "cancelled", time.Minute, true, events.AttemptAmbiguous, false, false},
		{"undispatched, 503 a second ago", "cancelled", time.Second, true, events.AttemptNotSent + "+503", false, true},
		{"undispatched, 503 a minute ago", "cancelled", time.Minute, true, events.AttemptNotSent + "+503", false, false},
		// Every call so far refused without reaching anyone (a locked
		// phone, a quota): no prompt is open, however long ago.
		{"undispatched, refused as locked a minute ago", "cancelled", time.Minute, true, events.AttemptNotSent, false, true},
		{"undispatched, given up a minute ago", "cancelled", time.Minute, true, events.AttemptGaveUp, false, true},
		{"off: cancelled at once", "cancelled", 100 * time.Millisecond, false, "", true, false},
	}
	on, off := newEnvWith(t, Options{FastFailure: fast}), newEnvWith(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := on
			if tt.off {
				e = off
			}
			body := readFixture(t, tt.fixture)
			cb, err := ParseCallback(body)
			if err != nil {
				t.Fatal(err)
			}
			id := uuid.NewString()
			p := payment(id)
			if tt.undispatched {
				p.RequestedAt = clock.Add(-time.Hour)
			}
			e.request(p)
			switch {
			case !tt.undispatched:
				e.dispatchAt(p, cb, clock.Add(-tt.since))
			case tt.attempt != "":
				e.attemptAt(p, tt.attempt, cb.CheckoutRequestID, clock.Add(-tt.since))
			}
			before, logsBefore := e.lastKept(), len(e.logs.String())

			status, answer := e.post(http.MethodPost, id, strings.NewReader(string(body)))
			if status != 200 || answer != bodyAccepted {
				t.Fatalf("answer %d %s", status, answer)
			}
			kept, _, _ := e.keptSince(before)
			if len(kept) != 1 {
				t.Fatalf("%d copies kept, want 1", len(kept))
			}
			n, _ := e.completed(id)
			logs := e.logs.String()[logsBefore:]
			if !tt.held {
				if kept[0].Subject != events.CallbackSubjectReceived(id) || n != 1 {
					t.Fatalf("kept on %s with %d stk.completed; want %s and 1", kept[0].Subject, n, events.CallbackSubjectReceived(id))
				}
				return
			}
			if kept[0].Subject != events.CallbackSubjectConfirm(id) || kept[0].Headers[events.CallbackHeaderReason] != events.ConfirmFastFailure {
				t.Errorf("kept on %s (reason %q), want %s (reason %q)", kept[0].Subject,
					kept[0].Headers[events.CallbackHeaderReason], events.CallbackSubjectConfirm(id), events.ConfirmFastFailure)
			}
			if n != 0 {
				t.Errorf("%d stk.completed published for a failure awaiting confirmation, want none", n)
			}
			for _, want := range []string{`"msg":"failure callback came sooner after its push than a customer can answer a prompt: held for Daraja's STK query"`,
				`"confirm_reason":"confirm_fast_failure"`} {
				if !strings.Contains(logs, want) {
					t.Errorf("logs lack %s:\n%s", want, logs)
				}
			}
		})
	}
}

// TestApplierFastFailure: the applier, matching a kept callback later (its
// look-ups had failed), measures from when the callback was received, not
// from its own clock: a fast failure is held, not counted because the
// applier came late.
func TestApplierFastFailure(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, Options{FastFailure: 2 * time.Second})
	body := readFixture(t, "cancelled")
	cb, err := ParseCallback(body)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	p := payment(id)
	e.request(p)
	received := clock.Add(-time.Hour) // the applier's clock is an hour on
	e.dispatchAt(p, cb, received.Add(-500*time.Millisecond))

	h, err := newHandler(Options{JS: e.ns.JS, Stream: e.ns.Stream, Conn: e.ns.Conn, Secrets: testSecrets,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	in := &delivery{id: uuid.NewString(), trackingID: id, body: body, headers: map[string][]string{}}
	in.headers.Set(events.CallbackHeaderID, in.id)
	in.headers.Set(events.CallbackHeaderReceivedAt, received.Format(time.RFC3339Nano))
	req, _ := http.NewRequest(http.MethodPost, "/", nil)
	if !h.keep(req, slog.New(slog.DiscardHandler), in, "", reasonUnverified) {
		t.Fatal("keep failed")
	}
	a, err := NewApplier(Options{JS: e.ns.JS, Stream: e.ns.Stream, Conn: e.ns.Conn, Secrets: testSecrets,
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), Now: func() time.Time { return clock },
		FastFailure: 2 * time.Second}, testApplyAfter)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("applier: %v", err)
		}
	}()
	wait.For(t, "the callback held for confirmation", func() bool {
		s, err := e.ns.JS.Stream(ctx, events.CallbackStreamName)
		if err != nil {
			return false
		}
		m, err := s.GetLastMsgForSubject(ctx, events.CallbackSubjectConfirm(id))
		return err == nil && m.Header.Get(events.CallbackHeaderReason) == events.ConfirmFastFailure
	})
	if n, _ := e.completed(id); n != 0 {
		t.Errorf("%d stk.completed, want none", n)
	}
}
