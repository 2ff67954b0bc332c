package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
)

// A receipt named by two payments' success callbacks. callback-ingest
// counted the first (the holder, which claimed the receipt) and held the
// second (the claimant: events.ConfirmReceiptTaken), which handleConfirm
// settles by Daraja's STK query as any held callback. Either may be the
// forgery: a forged success for the holder carrying the claimant's genuine
// receipt, counted before the claimant's genuine callback, is exactly what
// this catches. So the holder is questioned too: the claimant's held copy is
// kept again on the holder's stkcb.confirm.<holder> (reason
// events.ConfirmReceiptHolder), where this same consumer asks Daraja's STK
// query about the holder's push (questionHolder). An answer that does not
// confirm the holder's recorded success cannot undo it (outcomes are final):
// the operator is told (flagHolder).

// askAboutHolder keeps the claimant's held callback msg again on its
// holder's stkcb.confirm.<holder>, once: not when the newest copy there is
// already this claimant's question.
func (r *reconciler) askAboutHolder(work context.Context, log *slog.Logger, msg jetstream.Msg) error {
	claimant := events.TrackingIDOf(msg.Subject())
	holder := msg.Headers().Get(events.CallbackHeaderReceiptHolder)
	if !canonicalID(holder) || holder == claimant {
		// callback-ingest writes the holder as it claimed the receipt; a
		// copy without a usable one cannot name a subject.
		log.Error("callback held for a taken receipt names no valid holder: the holder cannot be questioned",
			"receipt_holder", holder)
		return nil
	}
	subject := events.CallbackSubjectConfirm(holder)
	ctx, cancel := context.WithTimeout(work, lookupTimeout)
	defer cancel()
	if r.callbacks != nil {
		m, err := events.LastMsg(ctx, r.js, r.callbacks, subject)
		switch {
		case err == nil && m.Header.Get(events.CallbackHeaderReason) == events.ConfirmReceiptHolder &&
			m.Header.Get(events.CallbackHeaderReceiptClaimant) == claimant:
			return nil
		case err != nil && !errors.Is(err, jetstream.ErrMsgNotFound):
			return fmt.Errorf("read %s: %w", subject, err)
		}
	}
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("metadata of the held callback: %w", err)
	}
	out := events.KeepAgain(msg, subject, events.ConfirmReceiptHolder)
	out.Header.Set(events.CallbackHeaderReceiptClaimant, claimant)
	if _, err := r.js.PublishMsg(ctx, out,
		jetstream.WithMsgID(fmt.Sprintf("reconciler-confirm:%d:holder", meta.Sequence.Stream)),
		jetstream.WithExpectStream(events.CallbackStreamName)); err != nil {
		return fmt.Errorf("keep on %s: %w", subject, err)
	}
	log.Warn("the payment that claimed this callback's receipt first is questioned too: handed to its own STK query",
		"receipt_holder", holder, "receipt", msg.Headers().Get(events.CallbackHeaderReceipt))
	return nil
}

// questionHolder asks Daraja's STK query about the push of the payment
// whose subject msg (an events.ConfirmReceiptHolder copy) is on, the
// holder, once it has its outcome: a recorded success with the receipt that
// Daraja does not confirm is flagged for the operator.
func (r *reconciler) questionHolder(work context.Context, log *slog.Logger, msg jetstream.Msg) {
	holder := events.TrackingIDOf(msg.Subject())
	receipt := msg.Headers().Get(events.CallbackHeaderReceipt)
	log = log.With("claimant_tracking_id", msg.Headers().Get(events.CallbackHeaderReceiptClaimant), "receipt", receipt)
	c, _, err := lastEvent[events.Completed](work, r.stream, events.TypeCompleted, holder)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// callback-ingest claims a receipt just before it publishes the
		// success: the holder's outcome is on its way (or with the
		// applier).
		log.Info("the receipt's holder has no outcome yet; asking later")
		later(log, msg, r.backoff(msg))
		return
	case err != nil:
		log.Warn("cannot read the receipt holder's outcome; checking later", "error", err)
		later(log, msg, retryDelay)
		return
	case c.ResultCode != "0" || !strings.EqualFold(c.Receipt, receipt):
		// Its success never counted with the receipt (its keep failed,
		// say): the api holds the receipt for nobody else.
		log.Info("the receipt's holder did not record the receipt: nothing to question",
			"result_code", c.ResultCode, "recorded_receipt", c.Receipt)
		ack(work, log, msg)
		return
	case c.CheckoutRequestID == "":
		r.flagHolder(work, log, msg, "no CheckoutRequestID to query")
		return
	}
	log = log.With("checkout_request_id", c.CheckoutRequestID)
	_ = msg.InProgress()
	ans := r.queries.ask(work, c.CheckoutRequestID, time.Time{})
	res, err := ans.res, ans.err
	switch {
	case err == nil && res.ResultCode == "0":
		log.Warn("Daraja's STK query confirms the receipt's holder was paid: its outcome stands; the other payment was settled by its own query")
		ack(work, log, msg)
	case err == nil:
		r.flagHolder(work, log, msg, res.ResultCode+" "+res.ResultDesc)
	case errors.Is(err, daraja.ErrUnknownTransaction):
		// The holder's outcome is recorded, so its push is long over:
		// Daraja not knowing it says the CheckoutRequestID is not Daraja's.
		r.flagHolder(work, log, msg, CodeUnknownTransaction+" The transaction does not Exist")
	default:
		delay := r.retryIn(msg, ans)
		log.Warn("STK query about the receipt's holder failed; asking again later", "error", err, "retry_in", delay.String())
		later(log, msg, delay)
	}
}

// flagHolder tells the operator that the holder's recorded success is not
// confirmed by Daraja (answer): an error line naming both payments, and the
// claimant's callback kept on stkcb.unmatched.receipt_disputed.<holder>
// with the answer. The holder's record still shows Success: outcomes are
// final, and only the M-Pesa statement can settle which payment the
// receipt is.
func (r *reconciler) flagHolder(work context.Context, log *slog.Logger, msg jetstream.Msg, answer string) {
	holder := events.TrackingIDOf(msg.Subject())
	meta, err := msg.Metadata()
	if err != nil {
		log.Warn("cannot flag the receipt's holder; trying later", "error", err)
		later(log, msg, retryDelay)
		return
	}
	out := events.KeepAgain(msg, events.CallbackSubjectRefused(events.UnmatchedReceiptDisputed, holder), events.UnmatchedReceiptDisputed)
	out.Header.Set(events.CallbackHeaderReceiptHolder, holder)
	out.Header.Set(events.CallbackHeaderQueryResult, events.CleanText(answer, events.MaxTextRunes))
	ctx, cancel := context.WithTimeout(work, lookupTimeout)
	_, err = r.js.PublishMsg(ctx, out,
		jetstream.WithMsgID(fmt.Sprintf("reconciler-confirm:%d:disputed", meta.Sequence.Stream)),
		jetstream.WithExpectStream(events.CallbackStreamName))
	cancel()
	if err != nil {
		log.Warn("cannot keep the disputed receipt for the operator; trying later", "error", err)
		later(log, msg, retryDelay)
		return
	}
	log.Error("RECEIPT DISPUTED: this payment is recorded as paid with a receipt another payment's callback named too, and Daraja's STK query does not confirm it was paid; its Success stands (outcomes are final): reconcile both from the M-Pesa statement",
		"daraja_answer", answer, "kept_on", out.Subject)
	ack(work, log, msg)
}

// canonicalID reports whether s is a tracking id as stkgate writes it.
func canonicalID(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && u.String() == s
}
