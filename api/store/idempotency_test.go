package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
)

func claimArgs(client, key, hash string) store.ClaimArgs {
	return store.ClaimArgs{
		Client: client, Key: key, RequestHash: hash, TrackingID: uuid.NewString(),
		TTL: time.Hour, Lease: time.Hour,
	}
}

func mustClaim(t *testing.T, s *store.Store, a store.ClaimArgs, want store.ClaimOutcome) store.KeyClaim {
	t.Helper()
	c, err := s.ClaimKey(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	if c.Outcome != want {
		t.Fatalf("ClaimKey = %s, want %s", c.Outcome, want)
	}
	return c
}

func TestClaimKeyLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	s := store.New(db)

	a := claimArgs("acme", "k", "h1")
	first := mustClaim(t, s, a, store.ClaimNew)
	if first.TrackingID != a.TrackingID || first.Holder == "" {
		t.Fatalf("new claim %+v", first)
	}
	// Held: the same request is busy, another is a mismatch, another
	// client's key is its own.
	if c := mustClaim(t, s, claimArgs("acme", "k", "h1"), store.ClaimBusy); c.TrackingID != a.TrackingID {
		t.Errorf("busy claim names %s", c.TrackingID)
	}
	mustClaim(t, s, claimArgs("acme", "k", "h2"), store.ClaimMismatch)
	mustClaim(t, s, claimArgs("globex", "k", "h2"), store.ClaimNew)

	// The lease ends without an answer: the next request takes the claim
	// over, with the same tracking id, and the old holder has lost it.
	if err := s.EndLease(ctx, "acme", "k", first.Holder); err != nil {
		t.Fatal(err)
	}
	over := mustClaim(t, s, claimArgs("acme", "k", "h1"), store.ClaimTakenOver)
	if over.TrackingID != a.TrackingID || over.Holder == first.Holder {
		t.Fatalf("take-over %+v of %+v", over, first)
	}
	for name, f := range map[string]func(context.Context, string, string, string) error{
		"CompleteKey": s.CompleteKey, "ReleaseKey": s.ReleaseKey, "EndLease": s.EndLease,
	} {
		if err := f(ctx, "acme", "k", first.Holder); !errors.Is(err, store.ErrNotHolder) {
			t.Errorf("%s by the old holder = %v, want ErrNotHolder", name, err)
		}
	}
	if err := s.CompleteKey(ctx, "acme", "k", over.Holder); err != nil {
		t.Fatal(err)
	}
	if c := mustClaim(t, s, claimArgs("acme", "k", "h1"), store.ClaimDone); c.TrackingID != a.TrackingID {
		t.Errorf("done claim names %s", c.TrackingID)
	}
	mustClaim(t, s, claimArgs("acme", "k", "h2"), store.ClaimMismatch)
	// A done key is never released.
	if err := s.ReleaseKey(ctx, "acme", "k", over.Holder); !errors.Is(err, store.ErrNotHolder) {
		t.Errorf("ReleaseKey of a done key = %v", err)
	}

	// A released claim is free again, for any request.
	rel := mustClaim(t, s, claimArgs("acme", "r", "h1"), store.ClaimNew)
	if err := s.ReleaseKey(ctx, "acme", "r", rel.Holder); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, s, claimArgs("acme", "r", "h2"), store.ClaimNew)

	// Expired keys are forgotten on use and purged.
	db.MustExec(`UPDATE idempotency_keys SET expires_at = now() WHERE client = 'acme'`)
	renewed := claimArgs("acme", "k", "h2")
	mustClaim(t, s, renewed, store.ClaimNew)
	n, err := s.PurgeExpiredKeys(ctx, 1)
	if err != nil || n != 1 {
		t.Fatalf("PurgeExpiredKeys = %d, %v; want the expired acme/r", n, err)
	}
	if n, err := s.PurgeExpiredKeys(ctx, 10); err != nil || n != 0 {
		t.Errorf("second purge = %d, %v", n, err)
	}
	var left []string
	if err := db.Select(&left, `SELECT client || '/' || key FROM idempotency_keys ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0] != "acme/k" || left[1] != "globex/k" {
		t.Errorf("keys left %v", left)
	}
}

func TestClaimKeyConcurrent(t *testing.T) {
	t.Parallel()
	s := store.New(pgtest.New(t))
	const n = 16
	outcomes := make([]store.KeyClaim, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.ClaimKey(context.Background(), claimArgs("acme", "k", "h"))
			if err != nil {
				t.Error(err)
			}
			outcomes[i] = c
		}()
	}
	wg.Wait()
	winners := 0
	for _, c := range outcomes {
		switch c.Outcome {
		case store.ClaimNew:
			winners++
		case store.ClaimBusy:
		default:
			t.Errorf("outcome %s", c.Outcome)
		}
	}
	if winners != 1 {
		t.Errorf("%d claims won, want 1", winners)
	}
}

func TestClaimKeyRefusesBadArgs(t *testing.T) {
	t.Parallel()
	s := store.New(pgtest.New(t))
	a := claimArgs("acme", "k", "h")
	a.TrackingID = "not-a-uuid"
	if _, err := s.ClaimKey(context.Background(), a); err == nil {
		t.Error("a tracking id that is no UUID was taken")
	}
	a = claimArgs("acme", "", "h")
	if _, err := s.ClaimKey(context.Background(), a); err == nil {
		t.Error("an empty key was taken")
	}
}
