package callback

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
)

// TestApplierShortcutDecidesAsMatch: the applier acks a kept callback after
// one lookup when the stored stk.completed is already its outcome
// (Applier.applied). That is sound only while match, over the same
// stream, would then publish nothing, hold nothing and keep nothing again:
// a stored outcome that is another push's, a reconciler's or an
// attempt record's must not make the shortcut swallow a late result or a
// confirmation. Each case sets up what the stream holds, and checks the
// shortcut against match's own decision.
func TestApplierShortcutDecidesAsMatch(t *testing.T) {
	t.Parallel()
	cbOf := func(t *testing.T, name string) Callback {
		cb, err := ParseCallback(readFixture(t, name))
		if err != nil {
			t.Fatal(err)
		}
		return cb
	}
	completedBy := func(source, code, receipt string) func(e *testEnv, p events.Payment, cb Callback) {
		return func(e *testEnv, p events.Payment, cb Callback) {
			e.publish("stkgate/test", events.Completed{Payment: p, ResultCode: code, ResultDesc: "x", Receipt: receipt,
				Source: source, CheckoutRequestID: cb.CheckoutRequestID, CompletedAt: clock})
		}
	}
	tests := []struct {
		name    string
		fixture string
		setup   []func(e *testEnv, p events.Payment, cb Callback)
		// shortcut: the applier settles it with one lookup.
		shortcut bool
	}{
		{name: "applied by the handler", fixture: "success", shortcut: true, setup: []func(*testEnv, events.Payment, Callback){
			func(e *testEnv, p events.Payment, cb Callback) { e.dispatchAt(p, cb, clock) },
			completedBy(events.SourceCallback, "0", "SCL4XQ2B7K")}},
		{name: "same failure, another push", fixture: "cancelled", shortcut: true, setup: []func(*testEnv, events.Payment, Callback){
			func(e *testEnv, p events.Payment, cb Callback) {
				cb.CheckoutRequestID = "ws_CO_other"
				e.dispatchAt(p, cb, clock)
			},
			completedBy(events.SourceCallback, "1032", "")}},
		{name: "same outcome from the reconciler's query", fixture: "cancelled", shortcut: true, setup: []func(*testEnv, events.Payment, Callback){
			func(e *testEnv, p events.Payment, cb Callback) { e.dispatchAt(p, cb, clock) },
			completedBy(events.SourceQuery, "1032", "")}},
		{name: "no stk.dispatched, the attempt record names another push", fixture: "cancelled", shortcut: true,
			setup: []func(*testEnv, events.Payment, Callback){
				func(e *testEnv, p events.Payment, cb Callback) {
					e.attemptAt(p, events.AttemptAccepted, "ws_CO_other", clock.Add(-time.Minute))
				},
				completedBy(events.SourceQuery, "1032", "")}},
		{name: "stkgate's own outcome: a late result", fixture: "cancelled", setup: []func(*testEnv, events.Payment, Callback){
			func(e *testEnv, p events.Payment, cb Callback) { e.dispatchAt(p, cb, clock) },
			completedBy(events.SourceDispatcher, events.CodeNoAnswer, "")}},
		{name: "stkgate's own outcome, a late success", fixture: "success", setup: []func(*testEnv, events.Payment, Callback){
			func(e *testEnv, p events.Payment, cb Callback) { e.dispatchAt(p, cb, clock) },
			completedBy(events.SourceDispatcher, events.CodeNoAnswer, "")}},
		{name: "same code, another receipt", fixture: "success", setup: []func(*testEnv, events.Payment, Callback){
			func(e *testEnv, p events.Payment, cb Callback) { e.dispatchAt(p, cb, clock) },
			completedBy(events.SourceCallback, "0", "SOTHER0001")}},
		{name: "no outcome yet", fixture: "cancelled", setup: []func(*testEnv, events.Payment, Callback){
			func(e *testEnv, p events.Payment, cb Callback) { e.dispatchAt(p, cb, clock.Add(-time.Hour)) }}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 0)
			id := uuid.NewString()
			p := payment(id)
			cb := cbOf(t, tt.fixture)
			e.request(p)
			for _, f := range tt.setup {
				f(e, p, cb)
			}
			a, err := NewApplier(Options{JS: e.ns.JS, Stream: e.ns.Stream, Conn: e.ns.Conn, Secrets: testSecrets,
				Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return clock }}, testApplyAfter)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			log := slog.New(slog.DiscardHandler)
			shortcut := a.applied(ctx, func() *slog.Logger { return log }, id, cb)
			if shortcut != tt.shortcut {
				t.Fatalf("applied = %v, want %v", shortcut, tt.shortcut)
			}
			m := a.h.match(ctx, log, id, cb, clock)
			decides := m.publish || m.late != nil || m.confirm != "" || m.keepOn != "" || m.retry
			if shortcut && decides {
				t.Errorf("the shortcut acked a callback match would act on: %+v", m)
			}
			if !shortcut && !decides && m.keepAs == "" && m.note != reasonRepeated {
				t.Errorf("match decided nothing for a callback the shortcut left to it: %+v", m)
			}
		})
	}
}
