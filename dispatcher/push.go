package dispatcher

// The push itself: Daraja called with backoff, each answer sorted into an
// outcome that says whether the customer may have been prompted.

import (
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"

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
func (d *dispatcher) push(r *delivery, rec *events.Attempt, rev, lockRev uint64) outcome {
	p := &pushAttempt{d: d, delivery: r, pr: d.pushRequest(r.req), rec: rec, rev: rev}
	rec.TrackingID = r.req.TrackingID
	p.out.lockRev = lockRev
	deferred, err := p.retry()
	return p.conclude(err, deferred)
}

// pushAttempt is one delivery's push: its calls to Daraja, the attempt
// record written around each, and the outcome they come to.
type pushAttempt struct {
	d *dispatcher
	*delivery
	pr   daraja.PushRequest
	rec  *events.Attempt // handle's copy of the attempt record, updated as the push goes
	rev  uint64          // rec's revision in STK_ATTEMPTS
	out  outcome
	last error // the last push error
}

// pushRequest is the push of req for Daraja.
func (d *dispatcher) pushRequest(req events.Requested) daraja.PushRequest {
	return daraja.PushRequest{
		Phone:            req.Phone,
		Amount:           req.Amount,
		AccountReference: req.Reference,
		TransactionDesc:  TransactionDesc,
		CallbackURL:      events.CallbackURL(d.cfg.CallbackBaseURL, req.TrackingID, d.cfg.CallbackSecrets.Token(req.TrackingID)),
	}
}

// retry runs try with backoff until a call is accepted (nil) or the loop
// ends. deferred is the wait Daraja asked for when it was longer than
// deferAbove.
func (p *pushAttempt) retry() (deferred time.Duration, err error) {
	// A request handed back between attempts continues its retry budget.
	budget := p.d.cfg.RetryMaxElapsed
	if !p.rec.FirstSentAt.IsZero() {
		budget = max(budget-time.Since(p.rec.FirstSentAt), time.Nanosecond)
	}
	b := &floorBackOff{eb: &backoff.ExponentialBackOff{
		InitialInterval:     p.d.cfg.RetryInitialInterval,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         30 * time.Second,
		MaxElapsedTime:      budget,
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}}
	b.floor = func() time.Duration { return p.d.minWait(p.last) }
	b.window = func() (time.Duration, bool) { return p.d.uncertainLeft(*p.rec) }
	b.deferAbove = p.d.cfg.deferAbove
	notify := func(err error, wait time.Duration) {
		p.log.Warn("push failed, retrying", "attempt", p.out.attempts, "retry_in", wait.Round(time.Millisecond).String(), "error", err)
	}
	err = backoff.RetryNotify(p.try, backoff.WithContext(b, p.stop), notify)
	return b.deferred, err
}

// try is one round of the loop: the checks, the phone's lock renewed, the
// attempt recorded as sending, the call, and its answer sorted. An error
// that is not backoff.Permanent is retried.
func (p *pushAttempt) try() error {
	_ = p.msg.InProgress() // best effort: the ticker reports progress too
	if err := p.safeToPush(); err != nil {
		return err
	}
	// The lock lives a prompt's lifetime from this push on.
	r, err := p.d.phones.refresh(p.work, p.req.Phone, p.req.TrackingID, p.out.lockRev)
	if err != nil {
		return backoff.Permanent(errHeld{err})
	}
	p.out.lockRev = r
	was, err := p.recordSending()
	if err != nil {
		return err
	}
	resp, byWindow, err := p.callDaraja()
	if errors.Is(err, daraja.ErrSendByPassed) {
		if byWindow {
			*p.rec = was
			return backoff.Permanent(errUncertainTooLate)
		}
		// Not sent within sendWithin of its record: recorded not_sent
		// (the call counted, so that the next one's push log entry is
		// its own) and retried as a refused push is.
		p.last = err
		p.rec.ErrorCode, p.rec.ErrorMessage = refusalOf(err, CodeRefused)
		p.record(events.AttemptNotSent)
		return err
	}
	p.out.attempts++
	p.renewLock()
	if err == nil {
		p.out.resp = resp
		return nil
	}
	p.last = err
	return p.sortFailure(err)
}

// safeToPush says (as a permanent error) why a push now could prompt the
// customer a second time, or could follow an outcome already in.
func (p *pushAttempt) safeToPush() error {
	if left, ok := p.d.uncertainLeft(*p.rec); ok && left <= 0 {
		// An earlier push answered 503 may have opened a prompt that
		// the customer could have answered by now, its callback lost:
		// a push now could be a second prompt.
		return backoff.Permanent(errUncertainTooLate)
	}
	if p.out.attempts > 0 {
		// A retry: the last call's answer said it was not processed,
		// but a 503 guarantees nothing, and a callback for it may have
		// come meanwhile. (handle looked before the first call.)
		f, err := p.d.evidence(p.work, p.req.TrackingID, false)
		if err != nil {
			return backoff.Permanent(errHeld{err})
		}
		if f.completed {
			return backoff.Permanent(errCompletedMeanwhile)
		}
	}
	return nil
}

// recordSending writes the push down before it leaves: the attempt record
// says sending (one more call), then STK_PUSHES logs it. It returns the
// record as it was before; when either write fails (a permanent errHeld),
// the push does not leave.
func (p *pushAttempt) recordSending() (was events.Attempt, err error) {
	was = *p.rec
	now := time.Now().UTC()
	p.rec.State = events.AttemptSending
	p.rec.Calls++
	if p.rec.FirstSentAt.IsZero() {
		p.rec.FirstSentAt = now
	}
	p.rec.SentAt, p.rec.UpdatedAt = now, now
	if p.d.cfg.beforeSending != nil {
		p.d.cfg.beforeSending(p.req.TrackingID)
	}
	r, err := p.d.attempts.put(p.work, *p.rec, p.rev)
	if err != nil {
		*p.rec = was
		return was, backoff.Permanent(errHeld{err})
	}
	p.rev = r
	// The second record of the push, apart from STK_ATTEMPTS: written
	// before the push leaves, or the push does not leave.
	if err := p.d.logPush(p.work, *p.rec); err != nil {
		p.undoSending(was)
		return was, backoff.Permanent(errHeld{err})
	}
	return was, nil
}

// undoSending puts the record back as it was, saying not_sent, after the
// push log could not be written.
func (p *pushAttempt) undoSending(was events.Attempt) {
	// Nothing was sent: the record says so again, or it stays
	// 'sending' and no delivery pushes (the safe side).
	was.State, was.UpdatedAt = events.AttemptNotSent, time.Now().UTC()
	if r, perr := p.d.attempts.put(p.work, was, p.rev); perr == nil {
		p.rev, *p.rec = r, was
	} else {
		p.log.Error("push log not written and the attempt record not put back: it stays 'sending', and the payment is not pushed again", "error", perr)
	}
}

// sendWithin bounds how long after its attempt record says sending a push
// may still leave (waiting in the client for a slot under MaxRPS, for a
// token, on a slow connection). callback-ingest takes a record still
// sending a minute after its SentAt for a call that is over (its
// maxCallTime) and counts a failure that comes after that: a push that
// left later could prompt a customer whose payment that failure ended.
const sendWithin = 30 * time.Second

// callDaraja sends the push. It must leave within sendWithin of its record,
// and after a 503 within the time left to push safely
// (daraja.ErrSendByPassed when it cannot; byWindow when that was the 503's
// window).
func (p *pushAttempt) callDaraja() (resp daraja.PushResponse, byWindow bool, err error) {
	send := p.pr
	send.SendBy = p.rec.SentAt.Add(p.d.cfg.sendWithin)
	if left, ok := p.d.uncertainLeft(*p.rec); ok {
		// Writing the records, or waiting in the client (for a slot
		// under MaxRPS, a token), may take the rest of the window: the
		// check at the top holds only if the push leaves by then.
		if by := time.Now().Add(left); by.Before(send.SendBy) {
			send.SendBy, byWindow = by, true
		}
	}
	// The client bounds each round trip (daraja.Config.Timeout).
	resp, err = p.d.client.Push(p.work, send)
	return resp, byWindow, err
}

// sortFailure sorts a failed call's answer: one that means the push cannot
// have reached the customer is recorded as not_sent and returned to be
// retried; any other ends the loop.
func (p *pushAttempt) sortFailure(err error) error {
	switch kindOf(err) {
	case daraja.KindLocked:
		if p.rec.Uncertain {
			// An earlier call of this payment may have reached the
			// customer after all: the phone's open prompt may be its
			// own. Pushing again could charge twice.
			return backoff.Permanent(errOwnPrompt{err})
		}
		p.rec.ErrorCode, p.rec.ErrorMessage = refusalOf(err, CodeRefused)
		p.record(events.AttemptNotSent)
		return err
	case daraja.KindTransient:
		p.rec.ErrorCode, p.rec.ErrorMessage = refusalOf(err, CodeRefused)
		if uncertain(err) && !p.rec.Uncertain {
			p.rec.Uncertain, p.rec.UncertainAt = true, p.rec.SentAt
		}
		p.record(events.AttemptNotSent)
		return err
	default:
		return backoff.Permanent(err)
	}
}

// record writes the outcome of a call. Once a push is sent its outcome
// must be recorded, so the write is retried until work ends.
func (p *pushAttempt) record(state string) {
	p.rec.State = state
	p.rec.UpdatedAt = time.Now().UTC()
	eb := backoff.NewExponentialBackOff()
	eb.InitialInterval = 200 * time.Millisecond
	eb.MaxInterval = 5 * time.Second
	eb.MaxElapsedTime = 0
	err := backoff.RetryNotify(func() error {
		_ = p.msg.InProgress()
		r, err := p.d.attempts.put(p.work, *p.rec, p.rev)
		if errors.Is(err, errConflict) {
			return backoff.Permanent(err)
		}
		if err == nil {
			p.rev = r
		}
		return err
	}, backoff.WithContext(eb, p.work), func(err error, wait time.Duration) {
		p.log.Error("attempt record not written, retrying", "state", state, "retry_in", wait.Round(time.Millisecond).String(), "error", err)
	})
	if err != nil {
		// The record still says sending: no delivery will push again,
		// and the callback or the reconciler settles the payment.
		p.log.Error("attempt record not written: it stays 'sending'", "state", state, "error", err)
	}
}

// conclude sorts how the loop ended (err, nil when a call was accepted;
// deferred, a long wait Daraja asked for) into the outcome, recording it.
func (p *pushAttempt) conclude(err error, deferred time.Duration) outcome {
	if p.endedByCheck(err) {
		return p.out
	}
	p.out.err = p.last
	if err != nil && deferred > 0 && p.stop.Err() == nil && p.work.Err() == nil {
		p.out.kind = outcomeDeferred
		p.out.wait = deferred
		return p.out
	}
	if err == nil {
		p.out.kind = outcomeAccepted
		p.rec.MerchantRequestID = p.out.resp.MerchantRequestID
		p.rec.CheckoutRequestID = p.out.resp.CheckoutRequestID
		p.rec.ErrorCode, p.rec.ErrorMessage = "", ""
		p.record(events.AttemptAccepted)
		return p.out
	}
	p.failed()
	return p.out
}

// endedByCheck reports whether the loop ended on one of the push's own
// checks rather than on Daraja's last answer, and if so sets the outcome
// and records it.
func (p *pushAttempt) endedByCheck(err error) bool {
	var held errHeld
	var own errOwnPrompt
	switch {
	case errors.As(err, &held):
		p.out.kind = outcomeHeld
		p.out.err = held.err
	case errors.Is(err, errCompletedMeanwhile):
		p.out.kind = outcomeCompletedMeanwhile
		p.out.err = p.last
		p.rec.ErrorCode, p.rec.ErrorMessage = refusalOf(p.last, CodeRefused)
		p.rec.ErrorMessage = "completed while the push was retried; last error: " + p.rec.ErrorMessage
		p.record(events.AttemptAmbiguous)
	case errors.As(err, &own):
		p.out.kind = outcomeAmbiguous
		p.out.err = own.err
		p.rec.ErrorCode, p.rec.ErrorMessage = refusalOf(own.err, CodeRefused)
		p.record(events.AttemptAmbiguous)
	case errors.Is(err, errUncertainTooLate):
		// The record keeps the 503's code and text (this delivery's first
		// look, or the last retry's answer).
		p.log.Warn("push answered 503 earlier may have prompted the customer, and the window to retry it safely has passed: not pushing again; its callback or the reconciler decides")
		p.out.kind = outcomeAmbiguous
		p.out.err = p.last
		if p.last != nil {
			p.rec.ErrorCode, p.rec.ErrorMessage = refusalOf(p.last, CodeRefused)
		}
		p.record(events.AttemptAmbiguous)
	default:
		return false
	}
	return true
}

// failed sorts a push whose last call failed into refused, given up,
// ambiguous or stopped, by the last error's kind, and records it.
func (p *pushAttempt) failed() {
	switch kindOf(p.last) {
	case daraja.KindRefused:
		p.rec.ErrorCode, p.rec.ErrorMessage = refusalOf(p.last, CodeRefused)
		if p.rec.Uncertain {
			// This call was refused, but an earlier one answered 503 may
			// have prompted the customer, who may yet pay: not a failure.
			p.out.kind = outcomeAmbiguous
			p.record(events.AttemptAmbiguous)
			break
		}
		p.out.kind = outcomeRefused
		p.record(events.AttemptRefused)
	case daraja.KindTransient, daraja.KindLocked:
		if p.stop.Err() != nil || p.work.Err() != nil {
			// The record says not_sent: the next delivery pushes again.
			p.out.kind = outcomeStopped
			return
		}
		if p.rec.Uncertain {
			// Given up, but an earlier call's 503 guaranteed nothing: the
			// customer may have a prompt of this payment. Not a failure;
			// its callback or the reconciler decides.
			p.out.kind = outcomeAmbiguous
			p.rec.ErrorCode, p.rec.ErrorMessage = refusalOf(p.last, CodeUnreachable)
			p.record(events.AttemptAmbiguous)
			break
		}
		p.out.kind = outcomeGaveUp
		p.rec.ErrorCode, p.rec.ErrorMessage = refusalOf(p.last, CodeUnreachable)
		p.record(events.AttemptGaveUp)
	default:
		// KindAmbiguous, and any kind this code does not know: the safe
		// reading is that the customer may have been prompted.
		p.out.kind = outcomeAmbiguous
		p.rec.ErrorCode, p.rec.ErrorMessage = refusalOf(p.last, CodeRefused)
		p.record(events.AttemptAmbiguous)
	}
}

// renewLock renews the phone's lock once a push's call came back: a prompt
// it opened is open from when Daraja processed it, at the latest its answer
// (an acceptance, or a 503 or a timeout that may hide one), so the lock's
// prompt lifetime counts from there, not from the send (a slow answer would
// eat into it). A failure is logged, not retried: the push is made, and the
// lock renewed before it still holds the phone.
func (p *pushAttempt) renewLock() {
	r, err := p.d.phones.refresh(p.work, p.req.Phone, p.req.TrackingID, p.out.lockRev)
	if err != nil {
		p.log.Warn("phone lock not renewed after the push was accepted: it lives a prompt's lifetime from the send", "error", err)
		return
	}
	p.out.lockRev = r
}
