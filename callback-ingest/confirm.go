package callback

import (
	"log/slog"

	"github.com/stkgate/stkgate/events"
)

// CALLBACK_CONFIRM: which success callbacks are confirmed through Daraja's
// STK query before they count.
const (
	// ConfirmMismatch (the default): a success whose amount or phone
	// disagrees with the request, or cannot be compared with it (no
	// amount; no phone, or one that is not all digits).
	ConfirmMismatch = "mismatch"
	// ConfirmAlways: every success.
	ConfirmAlways = "always"
	// ConfirmNever: none; a disagreement is only logged.
	ConfirmNever = "never"
)

// confirmation says why a matched callback must be confirmed through
// Daraja's STK query before it counts (an events.Confirm* reason), or ""
// when it counts as it stands. Such a callback is kept on
// stkcb.confirm.<id> and nothing of it is published: the reconciler asks
// Daraja and publishes Daraja's answer, so neither the callback's receipt
// nor its amount ever becomes the recorded outcome. A failure counts as it
// stands: it pays nobody, and the payment's CheckoutRequestID and token
// were checked.
func (h *handler) confirmation(log *slog.Logger, p events.Payment, cb Callback) string {
	reason := h.crossCheck(log, p, cb)
	if !cb.Success() {
		return ""
	}
	switch h.confirm {
	case ConfirmNever:
		if reason != "" {
			log.Warn("success callback disagrees with the request; CALLBACK_CONFIRM=never counts it as it stands",
				"confirm_reason", reason)
		}
		return ""
	case ConfirmAlways:
		if reason == "" {
			reason = events.ConfirmAlways
		}
	}
	return reason
}

// crossCheck logs where the callback disagrees with the request, and returns
// the first disagreement as an events.Confirm* reason ("" for none). For a
// success, what cannot be compared is no proof of agreement: a success
// without an amount, or without a phone of digits (none at all, or one
// Daraja masked), is sent to Daraja's STK query as a disagreeing one is.
func (h *handler) crossCheck(log *slog.Logger, p events.Payment, cb Callback) string {
	var reason string
	if cb.Amount != 0 && cb.Amount != p.Amount {
		log.Warn("callback amount differs from the request",
			"requested_amount", p.Amount, "callback_amount", cb.Amount)
		reason = events.ConfirmAmountMismatch
	}
	if isDigits(cb.Phone) && cb.Phone != p.Phone {
		log.Warn("callback phone differs from the request",
			"requested_phone", events.MaskPhone(p.Phone), "callback_phone", events.MaskPhone(cb.Phone))
		if reason == "" {
			reason = events.ConfirmPhoneMismatch
		}
	}
	if !cb.Success() {
		return reason
	}
	if cb.Amount == 0 {
		log.Warn("successful callback without an amount")
		if reason == "" {
			reason = events.ConfirmNoAmount
		}
	}
	if !isDigits(cb.Phone) {
		log.Warn("success callback without a phone number that can be compared with the request's",
			"callback_phone", events.MaskPhone(cb.Phone))
		if reason == "" {
			reason = events.ConfirmNoPhone
		}
	}
	return reason
}
