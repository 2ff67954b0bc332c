package dispatcher

// The push itself: Daraja called with backoff, each answer sorted into an
// outcome that says whether the customer may have been prompted.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
)

type outcomeKind int

const (
	outcomeAccepted outcomeKind = iota
	outcomeRefused
	outcomeGaveUp
	outcomeAmbiguous
	outcomeStopped
	outcomeHeld
	outcomeDeferred
	outcomeCompletedMeanwhile
)

type outcome struct {
	kind     outcomeKind
	resp     daraja.PushResponse
	err      error // the last push error, or why no push was sent
	attempts int
	lockRev  uint64        // the phone lock's last revision
	wait     time.Duration // outcomeDeferred: how long before the next push
}

// errHeld marks a round in which no push was sent because the attempt
// could not be recorded first or the phone lock was lost.
type errHeld struct{ err error }

func (e errHeld) Error() string { return e.err.Error() }
func (e errHeld) Unwrap() error { return e.err }

// push sends the push, retrying with backoff only the answers that mean the
// push cannot have reached the customer. Before each call it renews the
// phone lock and records the attempt as sending; after each answer it
// records what came of it in *rec (revision rev).
func (d *dispatcher) push(stop, work context.Context, log *slog.Logger, msg jetstream.Msg, req events.Requested, rec *events.Attempt, rev, lockRev uint64) outcome {
	pr := daraja.PushRequest{
		Phone:            req.Phone,
		Amount:           req.Amount,
		AccountReference: req.Reference,
		TransactionDesc:  TransactionDesc,
		CallbackURL:      events.CallbackURL(d.cfg.CallbackBaseURL, req.TrackingID, d.cfg.CallbackSecrets.Token(req.TrackingID)),
	}
	rec.TrackingID = req.TrackingID
	out := outcome{lockRev: lockRev}
	var last error
	// record writes the outcome of a call. Once a push is sent its outcome
	// must be recorded, so the write is retried until work ends.
	record := func(state string) {
		rec.State = state
		rec.UpdatedAt = time.Now().UTC()
		eb := backoff.NewExponentialBackOff()
		eb.InitialInterval = 200 * time.Millisecond
		eb.MaxInterval = 5 * time.Second
		eb.MaxElapsedTime = 0
		err := backoff.RetryNotify(func() error {
			_ = msg.InProgress()
			r, err := d.attempts.put(work, *rec, rev)
			if errors.Is(err, errConflict) {
				return backoff.Permanent(err)
			}
			if err == nil {
				rev = r
			}
			return err
		}, backoff.WithContext(eb, work), func(err error, wait time.Duration) {
			log.Error("attempt record not written, retrying", "state", state, "retry_in", wait.Round(time.Millisecond).String(), "error", err)
		})
		if err != nil {
			// The record still says sending: no delivery will push again,
			// and the callback or the reconciler settles the payment.
			log.Error("attempt record not written: it stays 'sending'", "state", state, "error", err)
		}
	}
	op := func() error {
		_ = msg.InProgress() // best effort: the ticker reports progress too
		if left, ok := d.uncertainLeft(*rec); ok && left <= 0 {
			// An earlier push answered 503 may have opened a prompt that
			// the customer could have answered by now, its callback lost:
			// a push now could be a second prompt.
			return backoff.Permanent(errUncertainTooLate)
		}
		if out.attempts > 0 {
			// A retry: the last call's answer said it was not processed,
			// but a 503 guarantees nothing, and a callback for it may have
			// come meanwhile. (handle looked before the first call.)
			f, err := d.evidence(work, req.TrackingID, false)
			if err != nil {
				return backoff.Permanent(errHeld{err})
			}
			if f.completed {
				return backoff.Permanent(errCompletedMeanwhile)
			}
		}
		// The lock lives a prompt's lifetime from this push on.
		r, err := d.phones.refresh(work, req.Phone, req.TrackingID, out.lockRev)
		if err != nil {
			return backoff.Permanent(errHeld{err})
		}
		out.lockRev = r
		was := *rec
		now := time.Now().UTC()
		rec.State = events.AttemptSending
		rec.Calls++
		if rec.FirstSentAt.IsZero() {
			rec.FirstSentAt = now
		}
		rec.SentAt, rec.UpdatedAt = now, now
		if d.cfg.beforeSending != nil {
			d.cfg.beforeSending(req.TrackingID)
		}
		r, err = d.attempts.put(work, *rec, rev)
		if err != nil {
			*rec = was
			return backoff.Permanent(errHeld{err})
		}
		rev = r
		// The second record of the push, apart from STK_ATTEMPTS: written
		// before the push leaves, or the push does not leave.
		if err := d.logPush(work, *rec); err != nil {
			// Nothing was sent: the record says so again, or it stays
			// 'sending' and no delivery pushes (the safe side).
			was.State, was.UpdatedAt = events.AttemptNotSent, time.Now().UTC()
			if r, perr := d.attempts.put(work, was, rev); perr == nil {
				rev, *rec = r, was
			} else {
				log.Error("push log not written and the attempt record not put back: it stays 'sending', and the payment is not pushed again", "error", perr)
			}
			return backoff.Permanent(errHeld{err})
		}
		send := pr
		if left, ok := d.uncertainLeft(*rec); ok {
			// Writing the records, or waiting in the client (for a slot
			// under MaxRPS, a token), may take the rest of the window: the
			// check at the top holds only if the push leaves by then.
			send.SendBy = time.Now().Add(left)
		}
		// The client bounds each round trip (daraja.Config.Timeout).
		resp, err := d.client.Push(work, send)
		if errors.Is(err, daraja.ErrSendByPassed) {
			*rec = was
			return backoff.Permanent(errUncertainTooLate)
		}
		out.attempts++
		if err == nil {
			out.resp = resp
			return nil
		}
		last = err
		switch kindOf(err) {
		case daraja.KindLocked:
			if rec.Uncertain {
				// An earlier call of this payment may have reached the
				// customer after all: the phone's open prompt may be its
				// own. Pushing again could charge twice.
				return backoff.Permanent(errOwnPrompt{err})
			}
			rec.ErrorCode, rec.ErrorMessage = refusalOf(err, CodeRefused)
			record(events.AttemptNotSent)
			return err
		case daraja.KindTransient:
			rec.ErrorCode, rec.ErrorMessage = refusalOf(err, CodeRefused)
			if uncertain(err) && !rec.Uncertain {
				rec.Uncertain, rec.UncertainAt = true, rec.SentAt
			}
			record(events.AttemptNotSent)
			return err
		default:
			return backoff.Permanent(err)
		}
	}
	// A request handed back between attempts continues its retry budget.
	budget := d.cfg.RetryMaxElapsed
	if !rec.FirstSentAt.IsZero() {
		budget = max(budget-time.Since(rec.FirstSentAt), time.Nanosecond)
	}
	b := &floorBackOff{eb: &backoff.ExponentialBackOff{
		InitialInterval:     d.cfg.RetryInitialInterval,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         30 * time.Second,
		MaxElapsedTime:      budget,
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}}
	b.floor = func() time.Duration { return d.minWait(last) }
	b.window = func() (time.Duration, bool) { return d.uncertainLeft(*rec) }
	b.deferAbove = d.cfg.deferAbove
	notify := func(err error, wait time.Duration) {
		log.Warn("push failed, retrying", "attempt", out.attempts, "retry_in", wait.Round(time.Millisecond).String(), "error", err)
	}
	err := backoff.RetryNotify(op, backoff.WithContext(b, stop), notify)
	var held errHeld
	var own errOwnPrompt
	switch {
	case errors.As(err, &held):
		out.kind = outcomeHeld
		out.err = held.err
		return out
	case errors.Is(err, errCompletedMeanwhile):
		out.kind = outcomeCompletedMeanwhile
		out.err = last
		rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeRefused)
		rec.ErrorMessage = "completed while the push was retried; last error: " + rec.ErrorMessage
		record(events.AttemptAmbiguous)
		return out
	case errors.As(err, &own):
		out.kind = outcomeAmbiguous
		out.err = own.err
		rec.ErrorCode, rec.ErrorMessage = refusalOf(own.err, CodeRefused)
		record(events.AttemptAmbiguous)
		return out
	case errors.Is(err, errUncertainTooLate):
		// The record keeps the 503's code and text (this delivery's first
		// look, or the last retry's answer).
		log.Warn("push answered 503 earlier may have prompted the customer, and the window to retry it safely has passed: not pushing again; its callback or the reconciler decides")
		out.kind = outcomeAmbiguous
		out.err = last
		if last != nil {
			rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeRefused)
		}
		record(events.AttemptAmbiguous)
		return out
	}
	out.err = last
	if err != nil && b.deferred > 0 && stop.Err() == nil && work.Err() == nil {
		out.kind = outcomeDeferred
		out.wait = b.deferred
		return out
	}
	if err == nil {
		out.kind = outcomeAccepted
		rec.MerchantRequestID = out.resp.MerchantRequestID
		rec.CheckoutRequestID = out.resp.CheckoutRequestID
		rec.ErrorCode, rec.ErrorMessage = "", ""
		record(events.AttemptAccepted)
		return out
	}

	switch kindOf(last) {
	case daraja.KindRefused:
		rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeRefused)
		if rec.Uncertain {
			// This call was refused, but an earlier one answered 503 may
			// have prompted the customer, who may yet pay: not a failure.
			out.kind = outcomeAmbiguous
			record(events.AttemptAmbiguous)
			break
		}
		out.kind = outcomeRefused
		record(events.AttemptRefused)
	case daraja.KindTransient, daraja.KindLocked:
		if stop.Err() != nil || work.Err() != nil {
			// The record says not_sent: the next delivery pushes again.
			out.kind = outcomeStopped
			return out
		}
		if rec.Uncertain {
			// Given up, but an earlier call's 503 guaranteed nothing: the
			// customer may have a prompt of this payment. Not a failure;
			// its callback or the reconciler decides.
			out.kind = outcomeAmbiguous
			rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeUnreachable)
			record(events.AttemptAmbiguous)
			break
		}
		out.kind = outcomeGaveUp
		rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeUnreachable)
		record(events.AttemptGaveUp)
	default:
		// KindAmbiguous, and any kind this code does not know: the safe
		// reading is that the customer may have been prompted.
		out.kind = outcomeAmbiguous
		rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeRefused)
		record(events.AttemptAmbiguous)
	}
	return out
}

// kindOf is daraja.KindOf with a cancelled call resolved: one cancelled
// before the request was written cannot have reached the customer (like a
// transient failure); one cancelled after it may have.
func kindOf(err error) daraja.Kind {
	k := daraja.KindOf(err)
	if k != daraja.KindCanceled {
		return k
	}
	var de *daraja.Error
	if errors.As(err, &de) && !de.RequestSent {
		return daraja.KindTransient
	}
	return daraja.KindAmbiguous
}

// minWait is the least wait before retrying after err: what the client
// advises (Daraja's Retry-After, or its own reading of the error), except that
// after "Unable to lock subscriber" the dispatcher's LockedWait replaces the
// client's default advice: the customer's open prompt must expire first, and
// LockedWait says how long that takes. A Retry-After asking for more wins.
func (d *dispatcher) minWait(err error) time.Duration {
	var de *daraja.Error
	if !errors.As(err, &de) {
		return 0
	}
	if de.Kind != daraja.KindLocked {
		return de.RetryAfter
	}
	if de.RetryAfter > daraja.RetryAfterLocked {
		return max(de.RetryAfter, d.cfg.LockedWait)
	}
	return d.cfg.LockedWait
}

// refusalOf is the result code and description stk.completed carries for a
// push error. The code is never empty: Daraja's errorCode, else the HTTP
// status of an answer without one (http.<status>), else fallback. The
// description is cleaned for events and Postgres (events.CleanText).
func refusalOf(err error, fallback string) (code, desc string) {
	var de *daraja.Error
	switch {
	case errors.As(err, &de):
		code, desc = de.Code, de.Message
		if code == "" && de.HTTPStatus != 0 {
			code = fmt.Sprintf("%s%d", daraja.CodeHTTPPrefix, de.HTTPStatus)
		}
		if desc == "" && de.HTTPStatus != 0 {
			desc = fmt.Sprintf("HTTP %d", de.HTTPStatus)
		}
	case err != nil:
		desc = err.Error()
	}
	if code == "" {
		code = fallback
	}
	return code, events.CleanText(desc, events.MaxTextRunes)
}

// uncertain reports whether a failed call's answer says it was not
// processed without guaranteeing it: a 503 from the gateway (DARAJA.md).
// A push that failed getting its token is not uncertain: it was not sent.
func uncertain(err error) bool {
	var de *daraja.Error
	return errors.As(err, &de) && de.Uncertain
}

// errCompletedMeanwhile: the payment's stk.completed was found before a
// retry; the push is not sent again.
var errCompletedMeanwhile = errors.New("completed while the push was retried")

// uncertainLeft reports whether rec had a push answered 503, and how long
// is left to push it again: a push within UncertainRetryWindow of the 503'd
// one finds the prompt it may have opened still open (Daraja then answers
// "Unable to lock subscriber"); a later one could find it answered and its
// callback lost, and prompt the customer a second time. A record that does
// not say when (written before UncertainAt existed) has no time left.
func (d *dispatcher) uncertainLeft(rec events.Attempt) (time.Duration, bool) {
	if !rec.Uncertain {
		return 0, false
	}
	if rec.UncertainAt.IsZero() {
		return 0, true
	}
	return d.cfg.UncertainRetryWindow - time.Since(rec.UncertainAt), true
}

// errUncertainTooLate: a push after a 503 could no longer leave within
// UncertainRetryWindow.
var errUncertainTooLate = errors.New("too late to push again safely after a 503")

// errOwnPrompt: "Unable to lock subscriber" after an uncertain call of the
// same payment: the open prompt may be its own.
type errOwnPrompt struct{ err error }

func (e errOwnPrompt) Error() string { return e.err.Error() }
func (e errOwnPrompt) Unwrap() error { return e.err }

// floorBackOff is an exponential backoff whose next wait is raised to a
// floor that depends on the last error, within the same elapsed-time budget.
// A floor longer than deferAbove (Daraja's one-minute waits) stops the loop
// with deferred set to the wait, which the caller spends in JetStream.
type floorBackOff struct {
	eb         *backoff.ExponentialBackOff
	floor      func() time.Duration
	deferAbove time.Duration
	deferred   time.Duration
	// window, when it reports true, is the time left to push at all (after
	// a 503: dispatcher.uncertainLeft). The next wait then fits in it,
	// whatever the floor, or the loop stops.
	window func() (time.Duration, bool)
}

// minProbeWait is the shortest wait floorBackOff gives a push within its
// window; with less time left, it stops.
const minProbeWait = 50 * time.Millisecond

func (f *floorBackOff) NextBackOff() time.Duration {
	next := f.eb.NextBackOff()
	if next == backoff.Stop {
		return backoff.Stop
	}
	if f.window != nil {
		if left, ok := f.window(); ok {
			if left/2 < minProbeWait {
				return backoff.Stop
			}
			return min(next, left/2)
		}
	}
	floor := f.floor()
	if next < floor {
		if f.eb.MaxElapsedTime > 0 && f.eb.GetElapsedTime()+floor > f.eb.MaxElapsedTime {
			return backoff.Stop
		}
		next = floor
	}
	if f.deferAbove > 0 && floor > f.deferAbove {
		f.deferred = next
		return backoff.Stop
	}
	return next
}

func (f *floorBackOff) Reset() { f.eb.Reset() }
