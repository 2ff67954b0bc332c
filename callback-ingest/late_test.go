package callback

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
)

// lateResults is every stk.late_result stored for id, oldest first.
func (e *testEnv) lateResults(id string) []events.LateResult {
	e.t.Helper()
	var out []events.LateResult
	n := e.count(events.Subject(events.TypeLateResult, id))
	if n == 0 {
		return nil
	}
	msg, err := e.ns.Stream.GetLastMsgForSubject(context.Background(), events.Subject(events.TypeLateResult, id))
	if err != nil {
		e.t.Fatal(err)
	}
	// Walk back from the last one: late results of one payment are few.
	for seq := msg.Sequence; seq > 0 && len(out) < n; seq-- {
		m, err := e.ns.Stream.GetMsg(context.Background(), seq)
		if err != nil || m.Subject != events.Subject(events.TypeLateResult, id) {
			continue
		}
		_, ev, err := events.Decode(m.Data)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append([]events.LateResult{ev.(events.LateResult)}, out...)
	}
	return out
}

// noAnswer finishes p as stkgate does when its push's answer was lost.
func (e *testEnv) noAnswer(p events.Payment) {
	e.t.Helper()
	e.publish("stkgate/reconciler", events.Completed{Payment: p, ResultCode: events.CodeNoAnswer,
		ResultDesc: "no answer", Source: events.SourceDispatcher, CompletedAt: clock})
}

// TestLateSuccessReplacesLateFailure: a late failure does not stand in the
// way of a late success. A forger holding X's CallBackURL sends a failure
// right after X ended Unknown; the customer's genuine late success, which
// comes next, is still published (a success pays someone, a failure
// nobody), and neither a failure after it nor the success again publishes
// anything more.
func TestLateSuccessReplacesLateFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	x := uuid.NewString()
	e.request(payment(x))
	e.noAnswer(payment(x))
	fail := `{"Body":{"stkCallback":{"MerchantRequestID":"6e86-45dd-91ac-fd5d4178ab523002867","CheckoutRequestID":"` +
		successCheckoutID + `","ResultCode":1032,"ResultDesc":"Request cancelled by user"}}}`
	for _, body := range []string{fail, string(readFixture(t, "success")), fail, string(readFixture(t, "success"))} {
		if st, _ := e.post(http.MethodPost, x, strings.NewReader(body)); st != http.StatusOK {
			t.Fatalf("callback answered %d", st)
		}
	}
	lates := e.lateResults(x)
	if len(lates) != 2 || lates[0].ResultCode != "1032" || lates[1].ResultCode != "0" || lates[1].Receipt != "SCL4XQ2B7K" {
		t.Fatalf("late results %+v, want the failure then the success with its receipt", lates)
	}
	if c := e.completedEvent(x); c.ResultCode != events.CodeNoAnswer {
		t.Errorf("the final outcome moved: %+v", c)
	}
}

// TestLateSuccessIsChecked: a late success goes through the checks of any
// success. Y was paid with receipt RCPTY00001. X ended Unknown; a success
// for X that names Y's receipt, or disagrees with X's request, never
// becomes X's stk.late_result with that receipt. With a push to query it
// is held for Daraja's STK query (whose answer the reconciler publishes as
// the late result); without one (the push's answer was lost) it is kept on
// stkcb.unmatched.late_unconfirmed.<X> for an operator. A late success
// that passes the checks claims its receipt.
func TestLateSuccessIsChecked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		dispatched bool
		amount     int64 // X's requested amount; the callbacks say 1500
		receipt    string
		wantOn     func(x string) string
		wantReason string
	}{
		{"another payment's receipt, no push to query", false, 1500, "rcpty00001",
			func(x string) string { return events.CallbackSubjectRefused(events.UnmatchedLateUnconfirmed, x) }, events.UnmatchedLateUnconfirmed},
		{"another amount, no push to query", false, 10, "RCPTX00001",
			func(x string) string { return events.CallbackSubjectRefused(events.UnmatchedLateUnconfirmed, x) }, events.UnmatchedLateUnconfirmed},
		{"another payment's receipt, a push to query", true, 1500, "rcpty00001",
			events.CallbackSubjectConfirm, events.ConfirmReceiptTaken},
		{"another amount, a push to query", true, 10, "RCPTX00001",
			events.CallbackSubjectConfirm, events.ConfirmAmountMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 0)
			y, yCheckout := e.paidPayment(1)
			if st, _ := e.post(http.MethodPost, y, strings.NewReader(successWith(t, yCheckout, "RCPTY00001"))); st != http.StatusOK {
				t.Fatalf("Y's callback: %d", st)
			}
			x := uuid.NewString()
			px := payment(x)
			px.Amount = tc.amount
			e.request(px)
			if tc.dispatched {
				e.dispatch(px, "6e86-45dd-91ac-fd5d4178ab523002867", successCheckoutID)
			}
			e.noAnswer(px)

			before := e.lastKept()
			if st, _ := e.post(http.MethodPost, x, strings.NewReader(successWith(t, successCheckoutID, tc.receipt))); st != http.StatusOK {
				t.Fatalf("X's callback: %d", st)
			}
			if lates := e.lateResults(x); len(lates) != 0 {
				t.Errorf("published as X's late result: %+v", lates)
			}
			kept, raw, _ := e.keptSince(before)
			if len(kept) != 1 || kept[0].Subject != tc.wantOn(x) || kept[0].Headers[events.CallbackHeaderReason] != tc.wantReason {
				t.Fatalf("kept %+v, want one copy on %s with reason %s", kept, tc.wantOn(x), tc.wantReason)
			}
			if tc.wantReason == events.ConfirmReceiptTaken && raw[0].Header.Get(events.CallbackHeaderReceiptHolder) != y {
				t.Errorf("receipt holder %q, want Y", raw[0].Header.Get(events.CallbackHeaderReceiptHolder))
			}
		})
	}

	t.Run("a clean late success claims its receipt", func(t *testing.T) {
		e := newEnv(t, 0)
		x := uuid.NewString()
		e.request(payment(x))
		e.noAnswer(payment(x))
		e.post(http.MethodPost, x, strings.NewReader(successWith(t, successCheckoutID, "RCPTX00002")))
		if lates := e.lateResults(x); len(lates) != 1 || lates[0].Receipt != "RCPTX00002" {
			t.Fatalf("late results %+v, want the success with its receipt", lates)
		}
		z, zCheckout := e.paidPayment(3)
		before := e.lastKept()
		e.post(http.MethodPost, z, strings.NewReader(successWith(t, zCheckout, "RCPTX00002")))
		if kept, _, _ := e.keptSince(before); len(kept) != 1 || kept[0].Headers[events.CallbackHeaderReason] != events.ConfirmReceiptTaken {
			t.Errorf("another payment's success naming X's late receipt kept as %+v, want held as %s", kept, events.ConfirmReceiptTaken)
		}
	})
}
