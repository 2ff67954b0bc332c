package callback

// Matching a parsed callback against what the stream knows of its payment:
// where it is kept, and whether it is published.

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stkgate/stkgate/events"
)

// matched is what the stream says of a parsed callback: where to keep it,
// and either the answer or what is to be published (apply).
type matched struct {
	// keepAs is an events.Unmatched* reason, or "" for a callback of a
	// known payment (kept on stkcb.received.<id>, where the applier finds
	// it).
	keepAs string
	// keepOn, when set, is the subject of a keepAs copy in place of the
	// shared stkcb.unmatched.<reason>: events.CallbackSubjectRefused, for a
	// callback whose token was right (no flood of forgeries for other
	// payments can push it out).
	keepOn string
	// note goes into the kept copy's reason header of a matched callback
	// (reasonRepeated, reasonUnverified, reasonLate).
	note string
	// confirm is an events.Confirm* reason: the callback is kept on
	// stkcb.confirm.<id> for the reconciler and nothing is published.
	confirm string
	// holder is, for events.ConfirmReceiptTaken, the payment that claimed
	// the callback's receipt (receipt, upper case) first.
	holder, receipt string
	// publish: the callback's stk.completed is to be published.
	publish bool
	// late is the payment's stored outcome, one stkgate decided itself
	// (events.DecidedByStkgate): the callback is published as
	// stk.late_result, never as a second stk.completed.
	late *events.Completed
	// retry: what the stream knows of the payment could not be read now;
	// the applier tries again.
	retry bool
	req   events.Requested
	// requestHeader is the headers of the payment's stored stk.requested
	// (its traceparent: traceCallback), nil when it was not found.
	requestHeader nats.Header
	status        int
	answer        Answer
}

// Reasons of a callback kept on stkcb.received.<id> (its
// CallbackHeaderReason); none for one applied at once.
const (
	// reasonRepeated: the payment already has the callback's outcome.
	reasonRepeated = "repeated"
	// reasonUnverified: a lookup failed; the applier applies it later.
	reasonUnverified = "unverified"
	// reasonLate: the payment was finished with an outcome stkgate decided
	// itself; the callback is published as stk.late_result.
	reasonLate = events.CallbackReasonLate
)

// unreadable is match's answer for a stored event that cannot be read,
// which no retry mends.
func unreadable(status int, answer Answer) matched {
	return matched{keepAs: events.UnmatchedUnverified, status: status, answer: answer}
}

// retryLater is match's answer when a lookup failed: the callback is kept on
// stkcb.received.<id>, where the applier tries again.
var retryLater = matched{note: reasonUnverified, retry: true, status: http.StatusServiceUnavailable, answer: unavailable}

// match checks the callback against what the stream knows of the payment.
// The HTTP handler and the applier both decide through it.
//
// A callback that is kept but not applied (unknown tracking id, another
// push, a conflicting outcome) is answered 200: Safaricom never retries, the
// copy is what an operator works from, and the same answer for known and
// unknown tracking ids tells a prober nothing.
//
// A lookup that failed (NATS trouble) keeps the callback on
// stkcb.received.<id>, where the applier tries again; only a stored event
// that cannot be read, which no retry mends, keeps it as
// events.UnmatchedUnverified.
//
// receivedAt is when the callback arrived (the applier passes the kept
// copy's time, not its own): how soon after the push a failure came is
// measured from it (confirmation).
//
// In named steps: the payment's events read at once (lookUp), its request
// found, the callback checked against its push (matchPush) and against a
// stored outcome (classifyCompleted), then put through the checks of its
// kind (checked).
func (h *handler) match(ctx context.Context, log *slog.Logger, id string, cb Callback, receivedAt time.Time) (m matched) {
	l := h.lookUp(ctx, id)
	defer func() { m.requestHeader = l.reqHeader }()
	req, err := l.req, l.reqErr
	switch {
	case errors.Is(err, errNotFound):
		log.Warn("callback for an unknown tracking id", outcomeAttrs(cb)...)
		return matched{keepAs: events.UnmatchedUnknownID, status: http.StatusOK, answer: accepted}
	case errors.Is(err, events.ErrMalformed):
		log.Error("stored stk.requested is unreadable", "error", err)
		return unreadable(http.StatusInternalServerError, internal)
	case err != nil:
		log.Error("look up stk.requested: the callback is kept for the applier", "error", err)
		return retryLater
	}

	pushAt, m, ok := h.matchPush(ctx, log, id, cb, l, receivedAt)
	if !ok {
		return m
	}
	disp := l.disp

	// A payment has one final outcome. Checking before publishing also
	// covers a callback repeated after JetStream's duplicate window.
	switch st, prev, err := h.classifyCompleted(log, cb, l.done, l.doneErr); {
	case err != nil:
		return retryLater
	case st == stateRepeated:
		return matched{note: reasonRepeated, status: http.StatusOK, answer: accepted}
	case st == stateLate:
		return h.matchLate(ctx, log, id, cb, req, prev, disp.CheckoutRequestID, receivedAt.Sub(pushAt))
	case st == stateConflict:
		return matched{keepAs: events.UnmatchedConflict, status: http.StatusOK, answer: accepted}
	case st == stateUnreadable:
		return unreadable(http.StatusOK, accepted)
	}
	if held, ok := h.checked(ctx, log, id, req.Payment, cb, receivedAt.Sub(pushAt)); !ok {
		return held
	}
	return matched{publish: true, req: req}
}

// matchPush checks the callback against the push it answers: its
// stk.dispatched, or, when that is not stored yet, the dispatcher's record
// of the push (pushAnswer). pushAt is when the push was answered, from
// which how fast a failure came is measured; ok false: m is match's answer.
func (h *handler) matchPush(ctx context.Context, log *slog.Logger, id string, cb Callback, l lookups, receivedAt time.Time) (pushAt time.Time, m matched, ok bool) {
	// How soon after its push a failure came (confirmation) is measured
	// from the latest moment Daraja can have processed the push: its
	// answer, which stk.dispatched follows, so a failure fast by it is
	// surely fast. Not from the request: a request that waited its turn
	// for the phone an hour was pushed just now.
	pushAt = receivedAt
	disp, dispAt, err := l.disp, l.dispAt, l.dispErr
	if err == nil {
		pushAt = dispAt
	}
	switch {
	case errors.Is(err, errNotFound):
		// The dispatcher publishes stk.dispatched right after Daraja's
		// answer, so it is normally there; without it there is nothing to
		// check the CheckoutRequestID against. It is not held for Daraja's
		// STK query for that: when Daraja's answer to the push was lost
		// there is no CheckoutRequestID to query, and this callback, its
		// token checked, is the only word there will be of the payment.
		// The dispatcher's record of the push stands in for it
		// (pushAnswer): a failure is held when it came fast by that
		// record, as a forger holding the CallBackURL could otherwise post
		// one while the push's answer is on its way; and a callback for
		// another push than the one the record names is not applied.
		log.Info("callback before stk.dispatched")
		var checkoutID string
		if pushAt, checkoutID, err = h.pushAnswer(ctx, log, id, receivedAt); err != nil {
			log.Error("look up the push's attempt record: the callback is kept for the applier", "error", err)
			return pushAt, retryLater, false
		}
		if checkoutID != "" && checkoutID != cb.CheckoutRequestID {
			log.Warn("callback for another push",
				append([]any{"recorded_checkout_request_id", checkoutID}, outcomeAttrs(cb)...)...)
			return pushAt, matched{keepAs: events.UnmatchedOtherPush, status: http.StatusOK, answer: accepted}, false
		}
	case errors.Is(err, events.ErrMalformed):
		log.Error("stored stk.dispatched is unreadable", "error", err)
		return pushAt, unreadable(http.StatusInternalServerError, internal), false
	case err != nil:
		log.Error("look up stk.dispatched: the callback is kept for the applier", "error", err)
		return pushAt, retryLater, false
	case disp.CheckoutRequestID != cb.CheckoutRequestID:
		log.Warn("callback for another push",
			append([]any{"dispatched_checkout_request_id", disp.CheckoutRequestID}, outcomeAttrs(cb)...)...)
		return pushAt, matched{keepAs: events.UnmatchedOtherPush, status: http.StatusOK, answer: accepted}, false
	case disp.MerchantRequestID != cb.MerchantRequestID:
		log.Warn("callback's MerchantRequestID differs from the push's",
			"dispatched_merchant_request_id", disp.MerchantRequestID)
	}
	return pushAt, matched{}, true
}

// lookups is what match reads of a payment in the STK stream: its newest
// stk.requested, stk.dispatched (with its envelope time) and stk.completed,
// each with the error of its lookup (errNotFound when there is none).
type lookups struct {
	req       events.Requested
	reqHeader nats.Header
	reqErr    error
	disp      events.Dispatched
	dispAt    time.Time
	dispErr   error
	done      events.Completed
	doneErr   error
}

// lookUp reads the payment's requested, dispatched and completed events at
// once: three JetStream round trips in the time of one. None of the three
// reads depends on another, and none changes anything; match decides from
// them in the order it always did, so a result it does not reach is neither
// logged nor acted on. What the concurrency changes is only when each is
// read within match's moment, and an outcome published by another source
// after its read is a race match always had (complete's duplicate check).
// The reads that do depend on these stay after them: the push's attempt
// record (pushAnswer) is read only once stk.dispatched was not found, and
// the receipt is claimed (checked) only once no outcome was.
//
// stk.completed is asked of the stream's leader at once: it is normally
// not stored yet when the callback comes, and a direct get's "not found"
// (which any replica may answer) is confirmed with the leader in any case
// (events.LastMsg), a second round trip after the first. The leader's
// answer is the one that confirmation would have given.
func (h *handler) lookUp(ctx context.Context, id string) lookups {
	var l lookups
	var wg sync.WaitGroup
	wg.Go(func() {
		l.disp, l.dispAt, l.dispErr = lastEventAt[events.Dispatched](ctx, h.js, h.stream, events.TypeDispatched, id)
	})
	wg.Go(func() {
		// A payment's outcome is normally not stored yet when its callback
		// comes; that "not found" would be confirmed with the leader.
		l.done, l.doneErr = lastEventFromLeader[events.Completed](ctx, h.js, h.stream, events.TypeCompleted, id)
	})
	subject := events.Subject(events.TypeRequested, id)
	msg, err := events.LastMsg(ctx, h.js, h.stream, subject)
	if l.req, _, l.reqErr = decodeLast[events.Requested](subject, id, msg, err); l.reqErr == nil {
		l.reqHeader = msg.Header
	}
	wg.Wait()
	return l
}

// checked puts a callback about to count through the checks of its kind
// (confirmation) and claims a success's receipt (claimReceipt). ok means
// it counts as it stands; otherwise m says why not: held for Daraja's STK
// query (m.confirm), or to be tried again (m.retry).
func (h *handler) checked(ctx context.Context, log *slog.Logger, id string, p events.Payment, cb Callback, sincePush time.Duration) (m matched, ok bool) {
	if reason := h.confirmation(log, p, cb, sincePush); reason != "" {
		return matched{confirm: reason, status: http.StatusOK, answer: accepted}, false
	}
	if !cb.Success() {
		return matched{}, true
	}
	// A success about to count: its receipt must be no other payment's.
	// Even CALLBACK_CONFIRM=never holds it then: counted, it would only be
	// recorded as an invalid outcome (the api's unique index), while
	// Daraja's query can tell whether this payment was paid.
	holder, err := h.claimReceipt(ctx, id, cb.Receipt)
	switch {
	case err != nil:
		log.Error("claim the receipt: the callback is kept for the applier", "error", err)
		return matched{note: reasonUnverified, retry: true, status: http.StatusServiceUnavailable, answer: unavailable}, false
	case holder != "":
		log.Warn("success callback names a receipt another payment claimed first: held for Daraja's STK query",
			"confirm_reason", events.ConfirmReceiptTaken, "receipt", cb.Receipt, "receipt_holder", holder)
		return matched{confirm: events.ConfirmReceiptTaken, holder: holder, receipt: events.ReceiptKey(cb.Receipt),
			status: http.StatusOK, answer: accepted}, false
	}
	return matched{}, true
}

// matchLate decides a callback for a payment stkgate finished itself
// (prev, events.DecidedByStkgate): it is published as stk.late_result, and
// a late Success there tells the merchant the payment was paid, with its
// receipt. So a success goes through the checks of any success (checked):
// one that fails them (its receipt another payment's, its amount or phone
// not the request's) is held for Daraja's STK query when the push has a
// CheckoutRequestID (checkoutID; the reconciler publishes Daraja's answer
// as the late result), and, when the push's answer was lost and there is
// nothing to query, kept for an operator on
// stkcb.unmatched.late_unconfirmed.<id>: nothing of it is published, and
// the payment stays Unknown. A failure pays nobody and is published as it
// stands: a late success replaces it (lateResult), so a forged one hides
// nothing.
func (h *handler) matchLate(ctx context.Context, log *slog.Logger, id string, cb Callback, req events.Requested,
	prev events.Completed, checkoutID string, sincePush time.Duration) matched {
	late := matched{note: reasonLate, late: &prev, req: req, status: http.StatusOK, answer: accepted}
	if !cb.Success() {
		return late
	}
	m, ok := h.checked(ctx, log, id, req.Payment, cb, sincePush)
	switch {
	case ok:
		return late
	case m.retry || checkoutID != "":
		return m
	}
	log.Error("LATE SUCCESS NOT CONFIRMED: a success callback for a payment stkgate finished itself fails the checks of any success, and its push has no CheckoutRequestID for Daraja's STK query: kept for an operator, nothing published; the payment stays "+label(prev.ResultCode),
		append([]any{"confirm_reason", m.confirm, "receipt_holder", m.holder, "final_result_code", prev.ResultCode,
			"requested_amount", req.Amount}, outcomeAttrs(cb)...)...)
	return matched{keepAs: events.UnmatchedLateUnconfirmed, keepOn: events.CallbackSubjectRefused(events.UnmatchedLateUnconfirmed, id),
		status: http.StatusOK, answer: accepted}
}

// label is the status label of a result code.
func label(code string) string {
	_, l := events.Outcome(code)
	return l
}

// setReceiptHolder names, on the copy of a callback held because its
// receipt was taken, the receipt and its holder, for the reconciler.
func setReceiptHolder(h nats.Header, m matched) {
	if m.holder == "" {
		return
	}
	h.Set(events.CallbackHeaderReceipt, m.receipt)
	h.Set(events.CallbackHeaderReceiptHolder, m.holder)
}

// completedState is whether the payment already has its stk.completed, and
// how it compares with this callback, which it logs.
type completedState int

const (
	stateNone       completedState = iota // no outcome yet
	stateRepeated                         // the same outcome is stored
	stateConflict                         // another outcome, Daraja's, is stored
	stateLate                             // an outcome stkgate decided itself is stored
	stateUnreadable                       // an outcome is stored that cannot be read
)

// completedState also returns the stored outcome, if any.
func (h *handler) completedState(ctx context.Context, log *slog.Logger, id string, cb Callback) (completedState, events.Completed, error) {
	prev, err := lastEvent[events.Completed](ctx, h.js, h.stream, events.TypeCompleted, id)
	return h.classifyCompleted(log, cb, prev, err)
}

// classifyCompleted is completedState from the lookup of the stored
// outcome: prev and err, as lastEvent returned them.
func (h *handler) classifyCompleted(log *slog.Logger, cb Callback, prev events.Completed, err error) (completedState, events.Completed, error) {
	switch {
	case errors.Is(err, errNotFound):
		return stateNone, prev, nil
	case errors.Is(err, events.ErrMalformed):
		// The stream has a final outcome even if this copy cannot read it;
		// a second one would only add to the confusion.
		log.Error("stored stk.completed is unreadable; callback not published",
			append(outcomeAttrs(cb), "error", err)...)
		return stateUnreadable, prev, nil
	case err != nil:
		log.Error("look up stk.completed", "error", err)
		return stateNone, prev, err
	}
	if repeats(prev, cb) {
		log.Info("repeated callback: the outcome is already stored", "stored_source", prev.Source)
		return stateRepeated, prev, nil
	}
	if events.DecidedByStkgate(prev.ResultCode) {
		// stkgate finished the payment without Daraja's word (no answer
		// in time, a deadline): Daraja's word now is shown beside it.
		return stateLate, prev, nil
	}
	// Money may be at stake (a success after a stored failure, or the
	// reverse): this line, and the kept copy, are what an operator
	// reconciles from.
	log.Error("callback conflicts with the stored outcome; callback not published",
		append([]any{
			"stored_source", prev.Source,
			"stored_result_code", prev.ResultCode,
			"stored_receipt", prev.Receipt,
		}, outcomeAttrs(cb)...)...)
	return stateConflict, prev, nil
}

// repeats says whether the stored outcome prev is cb's: the same result
// code and receipt.
func repeats(prev events.Completed, cb Callback) bool {
	return prev.ResultCode == cb.ResultCode && prev.Receipt == receiptOf(cb)
}

// outcomeAttrs is what an operator needs to reconcile a callback that was not
// published (the result code is already on the logger).
func outcomeAttrs(cb Callback) []any {
	return []any{
		"receipt", receiptOf(cb),
		"result_desc", cb.ResultDesc,
		"transaction_date", cb.TransactionDate,
		"amount", cb.Amount,
		"phone", events.MaskPhone(cb.Phone),
	}
}

// receiptOf is the receipt an stk.completed carries: only a success has one.
func receiptOf(cb Callback) string {
	if cb.Success() {
		return cb.Receipt
	}
	return ""
}
