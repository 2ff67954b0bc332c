package dispatcher

// A push's failures sorted: what kind each is, how long before the next call,
// the code and text a refusal is recorded with, whether a 503 may hide a
// prompt, and the backoff that honours Daraja's waits.

import (
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
)

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
