package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
)

// errConflict: the key changed since it was read; another dispatcher
// instance is working on the same payment (or took the phone).
var errConflict = errors.New("changed by another dispatcher")

// kvTimeout bounds each key-value call.
const kvTimeout = 5 * time.Second

// ensureBucket opens a key-value bucket, creating it when missing. An
// existing bucket is left as it is: updating its stream races with consumers
// being created by services starting at the same moment (see
// events.EnsureStream), and another service may have created it first.
func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", cfg.Bucket, err)
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
	e, err := s.kv.Get(ctx, trackingID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return events.Attempt{}, 0, nil
	}
	if err != nil {
		return events.Attempt{}, 0, fmt.Errorf("read attempt record: %w", err)
	}
	var a events.Attempt
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		// Not ours to overwrite blindly: treat it as a push of unknown fate.
		return events.Attempt{TrackingID: trackingID, State: "unreadable"}, e.Revision(), nil
	}
	return a, e.Revision(), nil
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

// take takes phone's lock for trackingID, or finds it already held by
// trackingID (an earlier delivery took it). It returns the lock's revision,
// or the tracking id holding it when that is another payment.
func (p phones) take(ctx context.Context, phone, trackingID string) (rev uint64, holder string, err error) {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	for range 3 {
		rev, err := p.kv.Create(ctx, phone, []byte(trackingID))
		if err == nil {
			return rev, "", nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, "", fmt.Errorf("take phone lock: %w", err)
		}
		e, err := p.kv.Get(ctx, phone)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released or expired meanwhile
		}
		if err != nil {
			return 0, "", fmt.Errorf("read phone lock: %w", err)
		}
		if h := string(e.Value()); h != trackingID {
			return 0, h, nil
		}
		return e.Revision(), "", nil
	}
	return 0, "", fmt.Errorf("take phone lock: %w", errConflict)
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
// it did.
func (p phones) releaseHeldBy(ctx context.Context, phone, trackingID string) (bool, error) {
	gctx, cancel := context.WithTimeout(ctx, kvTimeout)
	e, err := p.kv.Get(gctx, phone)
	cancel()
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read phone lock: %w", err)
	}
	if string(e.Value()) != trackingID {
		return false, nil
	}
	return true, p.release(ctx, phone, e.Revision())
}
