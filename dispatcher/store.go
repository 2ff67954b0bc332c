package dispatcher

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// errConflict: the key changed since it was read; another dispatcher
// instance is working on the same payment (or took the phone).
var errConflict = errors.New("changed by another dispatcher")

// kvTimeout bounds each key-value call.
const kvTimeout = 5 * time.Second

// ensureAttempts opens the attempts bucket (worker.EnsureBucket), and lengthens the
// life of its records when an older version made them shorter than the
// contract's (events.AttemptsConfig: as long as the stream keeps requests).
// A record must outlive every redelivery of its request.
func ensureAttempts(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	cfg := events.AttemptsConfig(replicas)
	kv, err := worker.EnsureBucket(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", cfg.Bucket, err)
	}
	if ttl := st.TTL(); ttl != 0 && ttl < cfg.TTL {
		if kv, err = js.UpdateKeyValue(ctx, cfg); err != nil {
			return nil, fmt.Errorf("key-value bucket %s: keep records %s: %w", cfg.Bucket, cfg.TTL, err)
		}
	}
	return kv, nil
}

// attempts is the STK_ATTEMPTS bucket: what the dispatcher is about to do
// and what came of it, per tracking id, written before every push.
type attempts struct{ kv jetstream.KeyValue }

// get returns the record and its revision; revision 0 means none yet.
func (s attempts) get(ctx context.Context, trackingID string) (events.Attempt, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	a, rev, _, err := events.GetAttempt(ctx, s.kv, trackingID)
	if errors.Is(err, events.ErrMalformed) {
		// Not ours to overwrite blindly: treat it as a push of unknown fate.
		return events.Attempt{TrackingID: trackingID, State: "unreadable"}, rev, nil
	}
	return a, rev, err
}

// put writes a, creating the record when rev is 0 and otherwise only over
// revision rev; it returns the new revision. A write that lost the race
// wraps errConflict.
func (s attempts) put(ctx context.Context, a events.Attempt, rev uint64) (uint64, error) {
	body, err := json.Marshal(a)
	if err != nil {
		return 0, fmt.Errorf("encode attempt record: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	if rev == 0 {
		rev, err = s.kv.Create(ctx, a.TrackingID, body)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("create attempt record: %w", errConflict)
		}
	} else {
		rev, err = s.kv.Update(ctx, a.TrackingID, body, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, fmt.Errorf("update attempt record: %w", errConflict)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("write attempt record: %w", err)
	}
	return rev, nil
}

// phones is the STK_PHONES bucket: per phone, the tracking id whose prompt
// may be open on it. Errors never quote a key: it is a phone number.
type phones struct{ kv jetstream.KeyValue }

// queueSuffix names, after the phone, the key of the phone's waiting list.
const queueSuffix = ".queue"

// waiter is a request waiting for a phone. Seq is the stream sequence of its
// stk.requested: the order in which clients' requests were accepted.
type waiter struct {
	ID   string    `json:"tracking_id"`
	Seq  uint64    `json:"seq"`
	Seen time.Time `json:"seen"`
}

// queueTimes are how long a waiter on a phone's list may go unseen.
type queueTimes struct {
	// stale: an entry unseen this long is asked whether its request still
	// waits (waiting); one that does keeps its place. A request's
	// redelivery can be late for want of a free worker, not only because
	// it is gone, and a later request must not overtake it then.
	stale time.Duration
	// gone: an entry unseen this long no longer holds the others up,
	// whatever waiting says (its request cannot be delivered: a consumer
	// deleted for good, say).
	gone time.Duration
	// waiting reports whether the request of tracking id still waits for
	// the phone: it has no outcome and was never pushed. An error counts as
	// waiting.
	waiting func(ctx context.Context, trackingID string) bool
}

// holdsUp reports whether waiter w, ahead of us, still holds the phone for
// itself.
func (qt queueTimes) holdsUp(ctx context.Context, w waiter, now time.Time) bool {
	unseen := now.Sub(w.Seen)
	switch {
	case unseen < qt.stale:
		return true
	case unseen >= qt.gone || qt.waiting == nil:
		return false
	}
	return qt.waiting(ctx, w.ID)
}

// acquire takes phone's lock for trackingID when it is free and no request
// that came earlier (lower seq) still waits for it, or finds the lock
// already held by trackingID (an earlier delivery took it). Otherwise it
// puts trackingID on the phone's waiting list (or refreshes its entry) and
// returns the tracking id holding the lock, or the earlier waiter's. The
// list stays first come, first served while the dispatchers are busy: an
// earlier waiter keeps its place until its request has moved on (pushed,
// or finished elsewhere), and only one unseen for qt.gone is passed over.
func (p phones) acquire(ctx context.Context, phone, trackingID string, seq uint64, now time.Time, qt queueTimes) (rev uint64, before string, err error) {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	for range 5 {
		e, err := p.kv.Get(ctx, phone)
		switch {
		case err == nil:
			if h := string(e.Value()); h != trackingID {
				return 0, h, p.join(ctx, phone, waiter{trackingID, seq, now}, qt.gone)
			}
			return e.Revision(), "", nil
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return 0, "", fmt.Errorf("read phone lock: %w", err)
		}
		q, _, err := p.queue(ctx, phone)
		if err != nil {
			return 0, "", err
		}
		var passed []string // earlier waiters that no longer wait
		for _, w := range q {
			if w.ID == trackingID || w.Seq >= seq {
				continue
			}
			if qt.holdsUp(ctx, w, now) {
				return 0, w.ID, p.join(ctx, phone, waiter{trackingID, seq, now}, qt.gone)
			}
			passed = append(passed, w.ID)
		}
		rev, err := p.kv.Create(ctx, phone, []byte(trackingID))
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // taken meanwhile: look again
		}
		if err != nil {
			return 0, "", fmt.Errorf("take phone lock: %w", err)
		}
		// Leaving the list is a read and maybe a write more, made only
		// when the list just read has something for it to take off (our
		// own entry of an earlier delivery, a waiter passed over, one
		// unseen for qt.gone): the first push for a phone nobody waits
		// for goes without. An entry added since that read is another
		// waiter's, which leave keeps. Or, rarely, our own, joined by a
		// delivery of this request racing this one: leave could come
		// before that join as well, and such an entry only makes later
		// requests ask whether this one still waits (qt.waiting: no, once
		// it pushed) until it goes stale.
		// An error is harmless: the entry goes stale, and a holder never
		// looks at the list.
		if len(leaving(trackingID, now, qt.gone, passed)(slices.Clone(q))) != len(q) {
			_ = p.leave(ctx, phone, trackingID, now, qt.gone, passed...)
		}
		return rev, "", nil
	}
	return 0, "", fmt.Errorf("take phone lock: %w", errConflict)
}

// queue reads phone's waiting list and its revision (0: none).
func (p phones) queue(ctx context.Context, phone string) ([]waiter, uint64, error) {
	e, err := p.kv.Get(ctx, phone+queueSuffix)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read phone queue: %w", err)
	}
	var q []waiter
	if err := json.Unmarshal(e.Value(), &q); err != nil {
		// Rewritten from scratch by the next waiter.
		return nil, e.Revision(), nil
	}
	return q, e.Revision(), nil
}

// update applies change to phone's waiting list, retrying when another
// dispatcher changed it meanwhile.
func (p phones) update(ctx context.Context, phone string, change func([]waiter) []waiter) error {
	for range 10 {
		was, rev, err := p.queue(ctx, phone)
		if err != nil {
			return err
		}
		q := change(slices.Clone(was))
		if rev != 0 && slices.Equal(was, q) {
			return nil
		}
		body, err := json.Marshal(q)
		if err != nil {
			return fmt.Errorf("encode phone queue: %w", err)
		}
		switch {
		case len(q) == 0 && rev == 0:
			return nil
		case len(q) == 0:
			err = p.kv.Delete(ctx, phone+queueSuffix, jetstream.LastRevision(rev))
		case rev == 0:
			_, err = p.kv.Create(ctx, phone+queueSuffix, body)
		default:
			_, err = p.kv.Update(ctx, phone+queueSuffix, body, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write phone queue: %w", err)
		}
		return nil
	}
	return fmt.Errorf("write phone queue: %w", errConflict)
}

// join puts w on phone's waiting list, or refreshes its entry, and drops
// the entries unseen for gone.
func (p phones) join(ctx context.Context, phone string, w waiter, gone time.Duration) error {
	return p.update(ctx, phone, func(q []waiter) []waiter {
		out := []waiter{w}
		for _, o := range q {
			if o.ID != w.ID && w.Seen.Sub(o.Seen) < gone {
				out = append(out, o)
			}
		}
		slices.SortFunc(out, func(a, b waiter) int { return cmp.Compare(a.Seq, b.Seq) })
		return out
	})
}

// leave takes trackingID off phone's waiting list, with the entries unseen
// for gone and those of also (waiters found no longer waiting).
func (p phones) leave(ctx context.Context, phone, trackingID string, now time.Time, gone time.Duration, also ...string) error {
	return p.update(ctx, phone, leaving(trackingID, now, gone, also))
}

// leaving is leave's change to a waiting list: it only takes entries off.
func leaving(trackingID string, now time.Time, gone time.Duration, also []string) func([]waiter) []waiter {
	return func(q []waiter) []waiter {
		return slices.DeleteFunc(q, func(w waiter) bool {
			return w.ID == trackingID || now.Sub(w.Seen) >= gone || slices.Contains(also, w.ID)
		})
	}
}

// refresh rewrites the lock held at rev, so that it lives a prompt's
// lifetime (the bucket's TTL) from now. It fails with errConflict when the
// lock was lost (expired, released, taken by another payment).
func (p phones) refresh(ctx context.Context, phone, trackingID string, rev uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	rev, err := p.kv.Update(ctx, phone, []byte(trackingID), rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("refresh phone lock: %w", errConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("refresh phone lock: %w", err)
	}
	return rev, nil
}

// release deletes the lock if it is still the one written at rev: a newer
// holder's lock is left alone.
func (p phones) release(ctx context.Context, phone string, rev uint64) error {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	err := p.kv.Delete(ctx, phone, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("release phone lock: %w", err)
	}
	return nil
}

// releaseHeldBy deletes the lock if trackingID holds it. It reports whether
// it did. The holder's push may write the lock between the read and the
// delete (it refreshes it once Daraja has answered, and a fast failure's
// completion can come before that): a delete that meets a newer revision
// reads the lock again, and deletes it if it is still trackingID's.
// Treating that mismatch as done, as release does for a newer holder,
// left a completed payment's lock in place for its three minutes.
func (p phones) releaseHeldBy(ctx context.Context, phone, trackingID string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	for range 5 {
		e, err := p.kv.Get(ctx, phone)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read phone lock: %w", err)
		}
		if string(e.Value()) != trackingID {
			return false, nil
		}
		err = p.kv.Delete(ctx, phone, jetstream.LastRevision(e.Revision()))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // written meanwhile: look again
		}
		if err != nil {
			return false, fmt.Errorf("release phone lock: %w", err)
		}
		return true, nil
	}
	return false, fmt.Errorf("release phone lock: %w", errConflict)
}
