package callback

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
// nor its amount ever becomes the recorded outcome. A failure pays nobody,
// and the payment's CheckoutRequestID and token were checked: it counts as
// it stands unless it came implausibly fast (fastFailure).
//
// sincePush is how long after its push the callback came.
func (h *handler) confirmation(log *slog.Logger, p events.Payment, cb Callback, sincePush time.Duration) string {
	reason := h.crossCheck(log, p, cb)
	if !cb.Success() {
		return h.fastFailure(log, sincePush)
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

// DefaultFastFailure is CALLBACK_FAST_FAILURE's default. The prompt must
// reach the phone, be read, and be cancelled or answered with a PIN: a
// customer's answer within 2 s of Daraja accepting the push is not a
// customer's. The dispatcher rests on the same bound (a prompt is not
// answered within the dispatcher's UncertainRetryWindow, 2 s, of its push:
// docs/DARAJA.md).
const DefaultFastFailure = 2 * time.Second

// fastFailure returns events.ConfirmFastFailure for a failure that came
// sooner after its push than a customer can answer a prompt (h.fast, 0 for
// never). Such a failure is Daraja's mistake, one Daraja gives without the
// customer (1037 "DS timeout user cannot be reached", 1036 "SMSC ACK
// timeout", 1025, 1001), or a forgery by someone who has the CallBackURL:
// counted, it would finish the payment before the genuine callback, perhaps
// a success, could. No code is exempt, since a forger can send any code as
// fast as Daraja: holding costs one STK query, which records Daraja's own
// fast failure as Daraja answers it, while counting a forged failure records
// a paying customer as Failed (and may make a merchant charge them twice).
// sincePush below zero (the clocks of two hosts disagree) is fast.
func (h *handler) fastFailure(log *slog.Logger, sincePush time.Duration) string {
	if h.fast <= 0 || sincePush >= h.fast {
		return ""
	}
	log.Warn("failure callback came sooner after its push than a customer can answer a prompt: held for Daraja's STK query",
		"confirm_reason", events.ConfirmFastFailure, "since_push", sincePush.String(), "fast_failure", h.fast.String())
	return events.ConfirmFastFailure
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

// pushAnswer is, for a callback of id that came (at now) before
// stk.dispatched, what the dispatcher's attempt record (events.AttemptsBucket,
// read from its leader) tells of the push: at is the latest moment Daraja
// can have processed a push that may have prompted the customer, the
// answer to the last call (accepted; a 503 or a lost answer, which may hide
// one), recorded after it left; checkoutID is Daraja's CheckoutRequestID
// when the answer gave one. at is now while a call is on its way (sending:
// Daraja may process it this instant; a record still sending maxCallTime
// after its call left is a call whose dispatcher died, over by then), when
// no call can have prompted (none
// recorded; every answer so far a refusal that reached nobody: a locked
// phone, a quota), and when the record cannot be read: a failure then is
// never taken for one a customer had time to give, and is held for
// Daraja's STK query.
func (h *handler) pushAnswer(ctx context.Context, log *slog.Logger, id string, now time.Time) (at time.Time, checkoutID string, err error) {
	_, err = h.attemptRecords(ctx)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return now, "", nil // no dispatcher has run: no push has left
	case err != nil:
		return time.Time{}, "", err
	}
	a, found, err := events.AttemptFromLeader(ctx, h.js, id)
	switch {
	case errors.Is(err, events.ErrMalformed):
		log.Warn("attempt record unreadable: the push is taken as just answered", "error", err)
		return now, "", nil
	case err != nil:
		return time.Time{}, "", err
	case !found || a.Calls == 0 || a.UpdatedAt.IsZero():
		return now, "", nil
	}
	switch {
	case a.State == events.AttemptSending && !a.SentAt.IsZero():
		// On its way, or its dispatcher died mid-call and the record
		// stays so: no call lasts past maxCallTime after it was
		// recorded, so Daraja processed it by then at the latest.
		return earliest(now, a.SentAt.Add(maxCallTime)), "", nil
	case a.State == events.AttemptAccepted:
		return a.UpdatedAt, a.CheckoutRequestID, nil
	case a.State == events.AttemptAmbiguous, a.Uncertain:
		return a.UpdatedAt, "", nil
	}
	return now, "", nil
}

// attemptRecords is the dispatcher's attempts bucket, opened on first use. It is never created here: until a dispatcher made
// it, jetstream.ErrBucketNotFound says no push has left. (Records are read
// from the leader of its stream: events.AttemptFromLeader.)
func (h *handler) attemptRecords(ctx context.Context) (jetstream.KeyValue, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.attempts != nil {
		return h.attempts, nil
	}
	kv, err := h.js.KeyValue(ctx, events.AttemptsBucket)
	if err != nil {
		return nil, err
	}
	h.attempts = kv
	return kv, nil
}

// maxCallTime bounds how long after its attempt record says sending a push
// can still reach Daraja: the dispatcher's client gives a call 30 s
// (daraja.DefaultTimeout, docs/DARAJA.md), and a wait for a slot under
// DARAJA_MAX_RPS or for a token before it leaves is allowed as long again.
const maxCallTime = time.Minute

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
