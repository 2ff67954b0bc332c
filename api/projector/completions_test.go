package projector_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

// The projector never discards a completion: whatever shape it comes in,
// the payment ends final (status 1), nothing is terminated, and a rewritten
// one is logged with its tracking_id.
func TestRunAppliesEveryCompletion(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	owner := newStory("0")
	h.publish(owner.requested, owner.dispatched)

	shapes := []struct {
		name    string
		edit    func(c *events.Completed)
		code    string // "" for the one sent
		invalid bool
	}{
		{"empty result code (a gateway's HTML 403)", func(c *events.Completed) { c.ResultCode, c.ResultDesc = "", "<html>403 Forbidden</html>" }, events.CodeInvalidOutcome, true},
		{"NUL in the error text", func(c *events.Completed) { c.ResultCode, c.ResultDesc = "400.002.02", "Bad\x00Request" }, "400.002.02", false},
		{"invalid UTF-8 in the text", func(c *events.Completed) { c.ResultDesc = "Request \xff cancelled" }, "", false},
		{"NUL in the result code", func(c *events.Completed) { c.ResultCode = "1032\x00" }, events.CodeInvalidOutcome, true},
		{"another payment's CheckoutRequestID", func(c *events.Completed) { c.CheckoutRequestID = owner.dispatched.CheckoutRequestID }, events.CodeInvalidOutcome, true},
	}
	var ids []string
	for _, sh := range shapes {
		s := newStory("1032")
		sh.edit(&s.completed)
		h.publish(s.requested, s.completed)
		ids = append(ids, s.id)
	}
	h.run(h.config())

	h.eventually("every payment final", func() (bool, string) {
		for i, id := range ids {
			r, err := h.store.Get(context.Background(), "acme", id)
			if err != nil || r.Status != events.StatusFinal {
				return false, fmt.Sprintf("%s: %+v %v", shapes[i].name, r, err)
			}
		}
		return true, ""
	})
	info := h.settled()
	logs := h.logs.String()
	if strings.Contains(logs, "event terminated") {
		t.Errorf("a completion was terminated:\n%s", logs)
	}
	if info.NumRedelivered != 0 {
		t.Errorf("%d redelivered", info.NumRedelivered)
	}
	for i, sh := range shapes {
		r, _ := h.store.Get(context.Background(), "acme", ids[i])
		want := sh.code
		if want == "" {
			want = "1032"
		}
		if r.ResponseCode != want || r.Stage != store.StageCompleted {
			t.Errorf("%s: code %q stage %d, want %q completed", sh.name, r.ResponseCode, r.Stage, want)
		}
		logged := strings.Contains(logs, "completion applied as an invalid outcome") && strings.Contains(logs, "tracking_id="+ids[i])
		if sh.invalid && !logged {
			t.Errorf("%s: the rewrite is not logged with tracking_id=%s", sh.name, ids[i])
		}
	}
	if r, _ := h.store.Get(context.Background(), "acme", owner.id); r.Status != events.StatusPending || r.CheckoutRequestID != owner.dispatched.CheckoutRequestID {
		t.Errorf("the CheckoutRequestID's owner changed: %+v", r)
	}
}

// stk.late_result is applied beside the outcome, never in its place, and
// never terminated; one the projector meets before its payment's
// completion is kept too.
func TestRunAppliesLateResults(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.run(h.config())
	late := func(s story) events.LateResult {
		return events.LateResult{Payment: s.requested.Payment, FollowsCode: events.CodeNoAnswer, ResultCode: "0",
			ResultDesc: "ok", Receipt: "SCL4XQ2B7K", Source: events.SourceCallback}
	}
	inOrder, lateFirst := newStory(events.CodeNoAnswer), newStory(events.CodeNoAnswer)
	inOrder.completed.MerchantRequestID, inOrder.completed.CheckoutRequestID = "", ""
	lateFirst.completed.MerchantRequestID, lateFirst.completed.CheckoutRequestID = "", ""
	h.publish(inOrder.requested, inOrder.completed, late(inOrder))
	h.publish(late(lateFirst), lateFirst.requested, lateFirst.completed)

	for _, s := range []story{inOrder, lateFirst} {
		h.eventually("late result shown", func() (bool, string) {
			r, err := h.store.Get(context.Background(), "acme", s.id)
			ok := err == nil && r.Status == events.StatusFinal && r.StatusLabel == events.LabelUnknown &&
				r.ResponseCode == events.CodeNoAnswer && r.TransactionCode == "" &&
				r.LateResult != nil && r.LateResult.TransactionCode == "SCL4XQ2B7K" && r.LateResult.StatusLabel == events.LabelSuccess
			return ok, fmt.Sprintf("%+v %v", r, err)
		})
	}
	h.settled()
	if logs := h.logs.String(); strings.Contains(logs, "event terminated") {
		t.Errorf("terminated:\n%s", logs)
	}
}
