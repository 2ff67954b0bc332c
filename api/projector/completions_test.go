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
