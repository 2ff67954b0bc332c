package callback

// Publishing a matched callback: its stk.completed, or its stk.late_result.

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/stkgate/stkgate/events"
)

// apply publishes what m says of a kept callback (callbackID, the kept
// copy's events.CallbackHeaderID): its stk.completed, or its
// stk.late_result. An error means nothing may have been stored: the applier
// tries again (the events' Nats-Msg-Id and match's look at the stored
// outcome make a second try harmless).
func (h *handler) apply(ctx context.Context, log *slog.Logger, m matched, cb Callback, callbackID string) error {
	if m.late != nil {
		return h.lateResult(ctx, log, *m.late, cb)
	}
	return h.complete(ctx, log, m.req, cb, callbackID)
}

// complete publishes the stk.completed of a matched callback, naming the
// kept copy it comes from (events.CallbackHeaderID): the applier, finding
// that name on the stored outcome, knows the copy applied without reading
// either (Applier.appliedFrom).
func (h *handler) complete(ctx context.Context, log *slog.Logger, req events.Requested, cb Callback, callbackID string) error {
	ev := events.Completed{
		Payment:           req.Payment,
		ResultCode:        cb.ResultCode,
		ResultDesc:        cb.ResultDesc,
		Source:            events.SourceCallback,
		MerchantRequestID: cb.MerchantRequestID,
		CheckoutRequestID: cb.CheckoutRequestID,
		CompletedAt:       h.now().UTC(),
	}
	if cb.Success() {
		ev.Receipt = cb.Receipt
		ev.TransactionDate = cb.TransactionDate
	}
	var header nats.Header
	if callbackID != "" {
		header = nats.Header{events.CallbackHeaderID: []string{callbackID}}
	}
	ack, err := h.pub.PublishWithHeader(ctx, ev, header)
	if err != nil {
		log.Error("publish stk.completed", "error", err)
		return err
	}
	if ack.Duplicate {
		// Another copy of this callback (or another source) won the race
		// inside the duplicate window: the reconciler's no_answer, say,
		// published after match looked. Then the callback is a late result.
		st, prev, err := h.completedState(ctx, log, req.TrackingID, cb)
		switch {
		case err != nil:
			log.Warn("publish was a duplicate; the stored outcome could not be read", "error", err)
			return err
		case st == stateLate:
			return h.lateResult(ctx, log, prev, cb)
		}
		return nil
	}
	_, label := events.Outcome(cb.ResultCode)
	log.Info("callback accepted", "status_label", label, "receipt", ev.Receipt, "seq", ack.Sequence)
	return nil
}

// lateResult publishes a callback for a payment stkgate finished with an
// outcome of its own (prev) as stk.late_result: Daraja's word, shown beside
// the final outcome, which stays. A stored late result is left as it is,
// but for a failure, which a success replaces (events.LateReplaces): a
// failure anyone with the CallBackURL can send at once must not hide the
// customer's payment. events.PublishLate decides against the stored one and
// publishes in one step, so a late failure racing a late success is never
// stored after it.
func (h *handler) lateResult(ctx context.Context, log *slog.Logger, prev events.Completed, cb Callback) error {
	ev := events.LateResult{
		Payment:           prev.Payment,
		FollowsCode:       prev.ResultCode,
		ResultCode:        cb.ResultCode,
		ResultDesc:        cb.ResultDesc,
		Source:            events.SourceCallback,
		MerchantRequestID: cb.MerchantRequestID,
		CheckoutRequestID: cb.CheckoutRequestID,
		LearntAt:          h.now().UTC(),
	}
	if cb.Success() {
		ev.Receipt = cb.Receipt
		ev.TransactionDate = cb.TransactionDate
	}
	res, err := h.pub.PublishLate(ctx, h.stream, ev)
	stored := res.Stored
	switch {
	case errors.Is(err, events.ErrMalformed):
		log.Error("stored stk.late_result is unreadable; callback not published", append(outcomeAttrs(cb), "error", err)...)
		return nil
	case err != nil:
		log.Error("publish stk.late_result", "error", err)
		return err
	case res.Ack == nil && stored.ResultCode == cb.ResultCode && stored.Receipt == receiptOf(cb):
		log.Info("repeated late callback: its late result is already stored")
		return nil
	case res.Ack == nil:
		log.Error("a second late callback differs from the stored late result, which stands; not published",
			append([]any{"stored_late_result_code", stored.ResultCode, "stored_late_receipt", stored.Receipt}, outcomeAttrs(cb)...)...)
		return nil
	case res.HadStored:
		log.Warn("a late success replaces the stored late failure", "stored_late_result_code", stored.ResultCode,
			"stored_late_source", stored.Source)
	}
	_, label := events.Outcome(cb.ResultCode)
	_, final := events.Outcome(prev.ResultCode)
	log.Warn("late callback: published as stk.late_result; the payment's outcome stays",
		append([]any{"final_result_code", prev.ResultCode, "final_status_label", final, "late_status_label", label,
			"seq", res.Ack.Sequence, "duplicate", res.Ack.Duplicate}, outcomeAttrs(cb)...)...)
	return nil
}
