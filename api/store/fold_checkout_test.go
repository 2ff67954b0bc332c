package store_test

import (
	"testing"

	"github.com/stkgate/stkgate/events"
)

// TestApplyFoldedCompletionTakesAFreedCheckoutID: main applied a payment's
// completion in a round after its earlier events, so a CheckoutRequestID
// another payment's completion gave up in the batch's first round was free
// by then. A completion folded into that first round (absorb) takes it in
// the same statement, and whether the other row gave it up yet depends on
// the order of the tracking ids: the unique index fails. Apply then
// applies the batch again without the fold, as before it, rather than
// refuse it as permanent (ErrConflict). (Only a dispatched naming another
// payment's current CheckoutRequestID gets here: Daraja never gives two
// pushes one id.)
func TestApplyFoldedCompletionTakesAFreedCheckoutID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, taker, giver string }{
		{"taker first", "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"},
		{"giver first", "00000000-0000-4000-8000-000000000002", "00000000-0000-4000-8000-000000000001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			taker, giver := payment(tc.taker), payment(tc.giver)
			f.apply(events.Dispatched{Payment: taker, MerchantRequestID: "m-x", CheckoutRequestID: "ws_CO_x"})
			f.apply(events.Dispatched{Payment: giver, MerchantRequestID: "m-y", CheckoutRequestID: "ws_CO_y"})
			// As main: the giver's completion moves it to ws_CO_z in round 0,
			// the taker's dispatched keeps ws_CO_x there, and its completion
			// takes ws_CO_y, free by then, in round 1.
			f.apply(
				events.Dispatched{Payment: taker, MerchantRequestID: "m-y", CheckoutRequestID: "ws_CO_y"},
				events.Completed{Payment: taker, ResultCode: "1032", ResultDesc: "cancelled", Source: events.SourceCallback,
					MerchantRequestID: "m-y", CheckoutRequestID: "ws_CO_y"},
				events.Completed{Payment: giver, ResultCode: "1032", ResultDesc: "cancelled", Source: events.SourceCallback,
					MerchantRequestID: "m-z", CheckoutRequestID: "ws_CO_z"},
			)
			if r := f.get(tc.taker); r.ResponseCode != "1032" || r.CheckoutRequestID != "ws_CO_y" {
				t.Errorf("taker: response code %q, CheckoutRequestID %q; want 1032, ws_CO_y", r.ResponseCode, r.CheckoutRequestID)
			}
			if r := f.get(tc.giver); r.ResponseCode != "1032" || r.CheckoutRequestID != "ws_CO_z" {
				t.Errorf("giver: response code %q, CheckoutRequestID %q; want 1032, ws_CO_z", r.ResponseCode, r.CheckoutRequestID)
			}
		})
	}
}
