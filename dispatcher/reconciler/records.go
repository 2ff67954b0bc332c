package reconciler

// What the reconciler reads of a payment beside its events: the phone's
// lock, the attempt record, the push log and the callbacks kept.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
)

// phoneBusy reports whether phone's lock (the dispatcher's per-phone queue)
// is held for another payment than trackingID's, or was released less than
// ReconcileAfter ago: the next request for the phone may not have been
// taken yet. A lock trackingID holds itself keeps nothing from it once it is
// ReconcileAfter old: a dispatcher that takes a phone writes the attempt
// record within moments, so an older one was left by a dispatcher that
// stopped (the lock lasts the bucket's TTL, a prompt's lifetime), and
// waiting for it would only wait out that TTL.
func (r *reconciler) phoneBusy(ctx context.Context, phone, trackingID string, now time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	kv, err := r.phoneLocks(ctx)
	if err != nil || kv == nil {
		return false, err
	}
	entries, err := kv.History(ctx, phone)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case err != nil:
		// Not quoted: the key is a phone number.
		return false, errors.New("read phone lock history: " + err.Error())
	case len(entries) == 0:
		return false, nil
	}
	last := entries[len(entries)-1]
	if last.Operation() == jetstream.KeyValuePut && string(last.Value()) != trackingID {
		return true, nil
	}
	return now.Sub(last.Created()) < r.cfg.ReconcileAfter, nil
}

// phoneLocks opens the dispatcher's phone-lock bucket; nil when no
// dispatcher has created it (no phone can be locked then). It is not
// created here: its TTL is the dispatcher's setting.
func (r *reconciler) phoneLocks(ctx context.Context) (jetstream.KeyValue, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phones != nil {
		return r.phones, nil
	}
	kv, err := r.js.KeyValue(ctx, events.PhonesBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("phone-lock bucket %s: %w", events.PhonesBucket, err)
	}
	r.phones = kv
	return kv, nil
}

// attempt reads the dispatcher's record of the payment's push.
func (r *reconciler) attempt(ctx context.Context, id string) (a events.Attempt, rev uint64, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	return events.GetAttempt(ctx, r.kv, id)
}

// promptSince is when the latest push of an attempt left, from which a
// prompt it opened lives (a record of an older version has only the first).
func promptSince(a events.Attempt) time.Time {
	if !a.SentAt.IsZero() {
		return a.SentAt
	}
	return a.FirstSentAt
}

// loggedPush is the newest push of id in the dispatcher's push log
// (STK_PUSHES), nil when none left or no dispatcher made the log yet. A
// replica's "not found" is confirmed by the leader: it decides between
// "never pushed" (Failed) and "may have prompted" (Unknown).
func (r *reconciler) loggedPush(ctx context.Context, id string) (*events.Attempt, error) {
	if r.pushLog == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	m, err := events.LastMsg(ctx, r.js, r.pushLog, events.PushLogSubject(id))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read push log of %s: %w", id, err)
	}
	var a events.Attempt
	if err := json.Unmarshal(m.Data, &a); err != nil || a.TrackingID != id {
		// Unreadable, it still says a push left, when it was stored.
		a = events.Attempt{TrackingID: id, Calls: 1, FirstSentAt: m.Time.UTC(), SentAt: m.Time.UTC()}
	}
	return &a, nil
}

// keptCallback is when the newest callback kept for id on
// stkcb.received.<id> was stored, zero when none is. Called only while the
// payment has no stk.completed, so such a callback is one not applied yet.
// A replica's "not found" is confirmed by the leader.
func (r *reconciler) keptCallback(ctx context.Context, id string) (time.Time, error) {
	if r.callbacks == nil {
		return time.Time{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	m, err := events.LastMsg(ctx, r.js, r.callbacks, events.CallbackSubjectReceived(id))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("read kept callbacks of %s: %w", id, err)
	}
	return m.Time, nil
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
