package callback

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
)

// successWith is the success fixture for checkoutID naming receipt.
func successWith(t *testing.T, checkoutID, receipt string) string {
	t.Helper()
	body := string(readFixture(t, "success"))
	out := strings.Replace(strings.Replace(body, successCheckoutID, checkoutID, 1), `"SCL4XQ2B7K"`, `"`+receipt+`"`, 1)
	if !strings.Contains(out, checkoutID) || !strings.Contains(out, receipt) {
		t.Fatal("the success fixture changed")
	}
	return out
}

// freshReceipt is body with the success fixture's receipt replaced by one
// no other payment has named: a receipt is one payment's, and a test that
// sends the fixture for many payments of one handler would otherwise see
// every success after the first held (TestCallbackReceiptTaken). Same
// length, so a padded body keeps its size.
func freshReceipt(body string) string {
	r := strings.ToUpper(strings.ReplaceAll(uuid.NewString(), "-", "")[:10])
	return strings.Replace(body, `"SCL4XQ2B7K"`, `"`+r+`"`, 1)
}

// paidPayment publishes the request and the push of a new payment and
// returns its tracking id and CheckoutRequestID.
func (e *testEnv) paidPayment(n int) (string, string) {
	e.t.Helper()
	id := uuid.NewString()
	checkout := fmt.Sprintf("ws_CO_2103202414305512371234%04d", n)
	e.request(payment(id))
	e.dispatch(payment(id), "6e86-45dd-91ac-fd5d4178ab523002867", checkout)
	return id, checkout
}

// TestCallbackReceiptTaken: an M-Pesa receipt is one payment's. A success
// callback whose receipt another payment's counted callback already
// claimed (compared in upper case, as the api's unique index compares
// them) does not count as it stands: it is held on stkcb.confirm.<id> with
// the reason confirm_receipt_taken and the holder's tracking id, for
// Daraja's STK query to decide, and the reconciler questions the holder
// too. Otherwise a forged success for one payment carrying the receipt of
// another, counted first, would leave the genuine payment without its
// outcome. The holder's own callback, repeated, is no conflict.
func TestCallbackReceiptTaken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	holder, holderCheckout := e.paidPayment(1)
	claimant, claimantCheckout := e.paidPayment(2)

	if status, answer := e.post(http.MethodPost, holder, strings.NewReader(successWith(t, holderCheckout, "RCPT0001XY"))); status != 200 || answer != bodyAccepted {
		t.Fatalf("holder's callback answered %d %s", status, answer)
	}
	if got := e.completedEvent(holder); got.Receipt != "RCPT0001XY" {
		t.Fatalf("holder recorded receipt %q", got.Receipt)
	}
	// The holder's callback again: repeated, not held.
	before := e.lastKept()
	e.post(http.MethodPost, holder, strings.NewReader(successWith(t, holderCheckout, "RCPT0001XY")))
	if kept, _, _ := e.keptSince(before); len(kept) != 1 || kept[0].Subject != events.CallbackSubjectReceived(holder) {
		t.Errorf("the holder's repeated callback kept as %+v, want on %s", kept, events.CallbackSubjectReceived(holder))
	}

	before, logsBefore := e.lastKept(), len(e.logs.String())
	status, answer := e.post(http.MethodPost, claimant, strings.NewReader(successWith(t, claimantCheckout, "rcpt0001xy")))
	if status != 200 || answer != bodyAccepted {
		t.Fatalf("claimant's callback answered %d %s", status, answer)
	}
	kept, raw, _ := e.keptSince(before)
	if len(kept) != 1 {
		t.Fatalf("%d copies kept, want 1", len(kept))
	}
	if kept[0].Subject != events.CallbackSubjectConfirm(claimant) || kept[0].Headers[events.CallbackHeaderReason] != events.ConfirmReceiptTaken {
		t.Errorf("kept on %s (reason %q), want %s (reason %q)", kept[0].Subject, kept[0].Headers[events.CallbackHeaderReason],
			events.CallbackSubjectConfirm(claimant), events.ConfirmReceiptTaken)
	}
	if got := raw[0].Header.Get(events.CallbackHeaderReceiptHolder); got != holder {
		t.Errorf("receipt holder header %q, want %q", got, holder)
	}
	if got := raw[0].Header.Get(events.CallbackHeaderReceipt); got != "RCPT0001XY" {
		t.Errorf("receipt header %q, want the receipt in upper case", got)
	}
	if n, _ := e.completed(claimant); n != 0 {
		t.Errorf("%d stk.completed for the claimant, want none", n)
	}
	logs := e.logs.String()[logsBefore:]
	for _, want := range []string{`"level":"WARN"`, `"msg":"success callback names a receipt another payment claimed first: held for Daraja's STK query"`,
		`"receipt_holder":"` + holder + `"`, `"confirm_reason":"confirm_receipt_taken"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}

// TestApplierReceiptTaken: the applier, matching a kept callback later,
// holds a success whose receipt another payment claimed as the handler
// does, the holder named.
func TestApplierReceiptTaken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	holder, holderCheckout := e.paidPayment(1)
	claimant, claimantCheckout := e.paidPayment(2)
	e.post(http.MethodPost, holder, strings.NewReader(successWith(t, holderCheckout, "RCPT0002XY")))
	e.keepRaw(claimant, reasonUnverified, []byte(successWith(t, claimantCheckout, "RCPT0002XY")))
	e.startApplier()
	e.waitApplied()
	s := e.callbackStream()
	m, err := s.GetLastMsgForSubject(context.Background(), events.CallbackSubjectConfirm(claimant))
	if err != nil {
		t.Fatalf("not held for confirmation: %v", err)
	}
	if m.Header.Get(events.CallbackHeaderReason) != events.ConfirmReceiptTaken || m.Header.Get(events.CallbackHeaderReceiptHolder) != holder {
		t.Errorf("held with reason %q, holder %q; want %q, %q", m.Header.Get(events.CallbackHeaderReason),
			m.Header.Get(events.CallbackHeaderReceiptHolder), events.ConfirmReceiptTaken, holder)
	}
	if n, _ := e.completed(claimant); n != 0 {
		t.Errorf("%d stk.completed for the claimant, want none", n)
	}
}
