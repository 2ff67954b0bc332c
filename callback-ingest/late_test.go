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
