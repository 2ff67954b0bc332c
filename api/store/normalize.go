package store

import (
	"fmt"
	"strings"

	"github.com/stkgate/stkgate/events"
)

// Normalize returns ev as the read model can always take it, and, for a
// completion it had to rewrite, why ("" otherwise).
//
// Every text field is cleaned with events.CleanText (Postgres refuses NUL
// and invalid UTF-8), descriptions cut to events.MaxTextRunes. A completion
// that cannot be applied as sent (no result code, a result code that is not
// clean text) becomes a Failed one with events.CodeInvalidOutcome (an
// Unknown one, events.CodeUnverifiedSuccess, when it said success), its
// description saying why and what it said: a payment is never left Pending
// because its completion was unreadable. Normalize is idempotent; events
// other than those of package events are returned as they are.
func Normalize(ev events.Event) (events.Event, string) {
	switch e := ev.(type) {
	case events.Requested:
		e.Payment = cleanPayment(e.Payment)
		return e, ""
	case *events.Requested:
		return Normalize(*e)
	case events.Dispatched:
		e.Payment = cleanPayment(e.Payment)
		e.MerchantRequestID, e.CheckoutRequestID = cleanWord(e.MerchantRequestID), cleanWord(e.CheckoutRequestID)
		e.ResponseDescription = events.CleanText(e.ResponseDescription, events.MaxTextRunes)
		e.CustomerMessage = events.CleanText(e.CustomerMessage, events.MaxTextRunes)
		return e, ""
	case *events.Dispatched:
		return Normalize(*e)
	case events.Completed:
		return normalizeCompleted(e)
	case *events.Completed:
		return normalizeCompleted(*e)
	case events.LateResult:
		e.Payment = cleanPayment(e.Payment)
		sent := e.ResultCode
		e.FollowsCode, e.ResultCode = cleanWord(e.FollowsCode), cleanWord(e.ResultCode)
		e.ResultDesc = events.CleanText(e.ResultDesc, events.MaxTextRunes)
		if e.ResultCode == "" || e.ResultCode != sent {
			// Shown, not applied: no outcome depends on it, so it is kept
			// as what it is, an unreadable result.
			e.ResultDesc = events.CleanText(fmt.Sprintf("result code %s unreadable; it said %s", quoted(sent), quoted(e.ResultDesc)), events.MaxTextRunes)
			e.ResultCode = events.CodeInvalidOutcome
		}
		e.Receipt, e.TransactionDate = cleanWord(e.Receipt), cleanWord(e.TransactionDate)
		e.Source = cleanWord(e.Source)
		e.MerchantRequestID, e.CheckoutRequestID = cleanWord(e.MerchantRequestID), cleanWord(e.CheckoutRequestID)
		return e, ""
	case *events.LateResult:
		return Normalize(*e)
	}
	return ev, ""
}

func normalizeCompleted(c events.Completed) (events.Completed, string) {
	sent := c
	c.Payment = cleanPayment(c.Payment)
	c.ResultCode = cleanWord(c.ResultCode)
	c.ResultDesc = events.CleanText(c.ResultDesc, events.MaxTextRunes)
	c.Receipt, c.TransactionDate = cleanWord(c.Receipt), cleanWord(c.TransactionDate)
	c.Source = cleanWord(c.Source)
	c.MerchantRequestID, c.CheckoutRequestID = cleanWord(c.MerchantRequestID), cleanWord(c.CheckoutRequestID)
	switch {
	case c.ResultCode == "":
		return invalidOutcome(c, "it has no result code"), "no result code"
	case c.ResultCode != sent.ResultCode:
		why := fmt.Sprintf("its result code %q is not clean text", sent.ResultCode)
		return invalidOutcome(c, why), why
	}
	return c, ""
}

// invalidOutcome rewrites a completion that cannot be applied as sent into
// a Failed one with events.CodeInvalidOutcome, or, when it said success, an
// Unknown one with events.CodeUnverifiedSuccess: the customer may have paid
// (a genuine success whose receipt a forged one took first, say), and a
// payment that may have been paid is never reported Failed. What it said
// stays in the description (and the event itself in the stream) for an
// operator; its receipt and transaction date are not shown as if it had
// succeeded.
func invalidOutcome(c events.Completed, why string) events.Completed {
	code := events.CodeInvalidOutcome
	if c.ResultCode == "0" {
		code = events.CodeUnverifiedSuccess
	}
	said := []string{"result code " + quoted(c.ResultCode)}
	if c.ResultDesc != "" {
		said = append(said, quoted(c.ResultDesc))
	}
	if c.Receipt != "" {
		said = append(said, "receipt "+c.Receipt)
	}
	c.ResultDesc = events.CleanText("stkgate could not apply this outcome as it was sent: "+why+
		"; it said "+strings.Join(said, ", "), events.MaxTextRunes)
	c.ResultCode = code
	c.Receipt, c.TransactionDate = "", ""
	return c
}

func quoted(s string) string {
	if s == "" {
		return "(none)"
	}
	return fmt.Sprintf("%q", s)
}

func cleanPayment(p events.Payment) events.Payment {
	p.Client, p.Phone = cleanWord(p.Client), cleanWord(p.Phone)
	p.Reference, p.Tag = cleanWord(p.Reference), cleanWord(p.Tag)
	return p
}

// cleanWord cleans an identifier or a short value (a code, a receipt, a
// reference): cleaned like any text, never cut.
func cleanWord(s string) string { return events.CleanText(s, 0) }
