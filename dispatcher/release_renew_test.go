package dispatcher

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
)

// A completion's release can come before the holder's push renews the lock
// (renewLock once Daraja answers, or the next round's refresh): the
// renewal must find the lock gone, not write it again for a payment that is
// already finished, or the phone's next payment waits out its TTL.
func TestRenewalAfterReleaseDoesNotRetakeThePhone(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	kv := h.bucket(events.PhonesConfig(1, 0))
	ph := phones{kv: kv}
	ctx := context.Background()
	phone, holder := newPayment().Phone, uuid.NewString()
	rev, before, err := ph.acquire(ctx, phone, holder, 1, time.Now().UTC(), queueTimes{})
	if err != nil || before != "" {
		t.Fatalf("acquire: %q, %v", before, err)
	}
	if rev, err = ph.refresh(ctx, phone, holder, rev); err != nil {
		t.Fatal(err)
	}
	if released, err := ph.releaseHeldBy(ctx, phone, holder); err != nil || !released {
		t.Fatalf("releaseHeldBy: %v, %v; want true, nil", released, err)
	}
	if _, err := ph.refresh(ctx, phone, holder, rev); !errors.Is(err, errConflict) {
		t.Errorf("renewal after the release: %v, want errConflict", err)
	}
	if e, err := kv.Get(ctx, phone); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the completed payment's lock is back: %v, %v", e, err)
	}
}
