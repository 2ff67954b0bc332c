package reconciler

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// lateResult is the newest stk.late_result of id, found false when none.
func (h *harness) lateResult(id string) (l events.LateResult, found bool) {
	h.t.Helper()
	m, err := h.ns.Stream.GetLastMsgForSubject(context.Background(), events.Subject(events.TypeLateResult, id))
	if err == jetstream.ErrMsgNotFound {
		return l, false
	}
	if err != nil {
		h.t.Fatal(err)
	}
	_, ev, err := events.Decode(m.Data)
	if err != nil {
		h.t.Fatal(err)
	}
	return ev.(events.LateResult), true
}

// TestConfirmLateThroughQuery: a callback held for confirmation (callback-
// ingest holds a late success that fails the checks of any success) of a
// payment stkgate finished itself, whose push has a CheckoutRequestID, is
// answered by Daraja's STK query, and the answer is published as the
// payment's stk.late_result (source "query", never the callback's receipt);
// the outcome stays, and the callback is not handed back to callback-ingest.
// A stored late failure gives way to a success; a stored late success
// stands.
func TestConfirmLateThroughQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		queryCode  string
		storedLate string // the code of a late result stored before; "" for none
		want       string // the late result's code afterwards
		wantSource string
	}{
		{"Daraja says paid", "0", "", "0", events.SourceQuery},
		{"Daraja says cancelled", "1032", "", "1032", events.SourceQuery},
		{"paid, after a late failure", "0", "1032", "0", events.SourceQuery},
		{"cancelled, after a late success", "1032", "0", "0", events.SourceCallback},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			p, resp := h.dispatch(darajatest.Script{ResultCode: tc.queryCode, NoCallback: true, CallbackDelay: -1})
			final := events.Completed{Payment: p, ResultCode: events.CodeNoAnswer, ResultDesc: "no answer",
				Source: events.SourceDispatcher, CompletedAt: time.Now().UTC()}
			h.publish(final)
			if tc.storedLate != "" {
				stored := events.LateResult{Payment: p, FollowsCode: final.ResultCode, ResultCode: tc.storedLate,
					Source: events.SourceCallback, CheckoutRequestID: resp.CheckoutRequestID, LearntAt: time.Now().UTC()}
				if tc.storedLate == "0" {
					stored.Receipt = "SCL4XQ2B7K"
				}
				h.publish(stored)
			}
			h.holdForConfirmation(p, resp.CheckoutRequestID)
			h.start()
			waitConfirmAcked(t, h, 10*time.Second)

			l, found := h.lateResult(p.TrackingID)
			if !found || l.ResultCode != tc.want || l.Source != tc.wantSource || l.FollowsCode != events.CodeNoAnswer {
				t.Fatalf("late result %+v (found %v), want %s from %s after %s", l, found, tc.want, tc.wantSource, events.CodeNoAnswer)
			}
			if l.Receipt == "FORGED0001" {
				t.Errorf("the held callback's receipt was published")
			}
			if c, _ := h.completion(p.TrackingID, time.Second); c.ResultCode != events.CodeNoAnswer || h.completions(p.TrackingID) != 1 {
				t.Errorf("the outcome moved: %+v", c)
			}
			if tc.storedLate == "" && len(h.queriesFor(resp.CheckoutRequestID)) == 0 {
				t.Errorf("no STK query")
			}
			s, err := h.ns.JS.Stream(context.Background(), events.CallbackStreamName)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetLastMsgForSubject(context.Background(), events.CallbackSubjectReceived(p.TrackingID)); err == nil {
				t.Errorf("handed back to callback-ingest as a late result, want answered by the query")
			}
		})
	}
}

// TestConfirmLateAfterQueryDecidedOutcome: the STK query finished the payment
// with a code of stkgate's (stkgate.unknown_transaction, source "query"), and
// its callback came afterwards, a success callback-ingest did not trust: it
// is held as a late result, and Daraja's STK query answers it as for any
// other outcome stkgate decided. The outcome's source does not make the
// callback answered (TestConfirmLateHeldBeforeQueryDecidedOutcome: nor
// when it was kept before it).
func TestConfirmLateAfterQueryDecidedOutcome(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	p, resp := h.dispatch(darajatest.Script{ResultCode: "0", NoCallback: true, CallbackDelay: -1})
	h.publish(events.Completed{Payment: p, ResultCode: CodeUnknownTransaction, ResultDesc: "The transaction does not exist",
		Source: events.SourceQuery, CheckoutRequestID: resp.CheckoutRequestID, CompletedAt: time.Now().UTC()})
	h.holdForConfirmation(p, resp.CheckoutRequestID)
	h.start()
	waitConfirmAcked(t, h, 10*time.Second)

	l, found := h.lateResult(p.TrackingID)
	if !found || l.ResultCode != "0" || l.Source != events.SourceQuery || l.FollowsCode != CodeUnknownTransaction {
		t.Fatalf("late result %+v (found %v), want 0 from the query after %s", l, found, CodeUnknownTransaction)
	}
	if l.Receipt == "FORGED0001" {
		t.Errorf("the held callback's receipt was published")
	}
	if c, _ := h.completion(p.TrackingID, time.Second); c.ResultCode != CodeUnknownTransaction || h.completions(p.TrackingID) != 1 {
		t.Errorf("the outcome moved: %+v", c)
	}
}

// TestConfirmLateHeldBeforeQueryDecidedOutcome: a success held while the
// query that will finish the payment as stkgate.unknown_transaction is
// under way (it was asked before the callback existed) is still Daraja's
// word to ask about: kept before that outcome is stored, it is not dropped.
func TestConfirmLateHeldBeforeQueryDecidedOutcome(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	p, resp := h.dispatch(darajatest.Script{ResultCode: "0", NoCallback: true, CallbackDelay: -1})
	h.holdForConfirmation(p, resp.CheckoutRequestID)
	h.publish(events.Completed{Payment: p, ResultCode: CodeUnknownTransaction, ResultDesc: "The transaction does not exist",
		Source: events.SourceQuery, CheckoutRequestID: resp.CheckoutRequestID, CompletedAt: time.Now().UTC()})
	h.start()
	waitConfirmAcked(t, h, 10*time.Second)

	l, found := h.lateResult(p.TrackingID)
	if !found || l.ResultCode != "0" || l.Source != events.SourceQuery || l.FollowsCode != CodeUnknownTransaction {
		t.Fatalf("late result %+v (found %v), want 0 from the query after %s", l, found, CodeUnknownTransaction)
	}
}
