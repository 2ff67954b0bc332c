package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
)

func reserve(t *testing.T, s *store.Store, phone, id string, maxPrompts int, window time.Duration) store.PromptSlot {
	t.Helper()
	slot, err := s.ReservePrompt(context.Background(), phone, id, maxPrompts, window)
	if err != nil {
		t.Fatal(err)
	}
	return slot
}

func TestReservePrompt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	s := store.New(db)
	const phone, other = "254712000001", "254712000002"

	ids := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	for i, id := range ids[:2] {
		if got := reserve(t, s, phone, id, 2, time.Hour); !got.Reserved {
			t.Fatalf("prompt %d refused: %+v", i+1, got)
		}
	}
	// The same request again (a retry publishing the same tracking id)
	// keeps its slot and is not counted twice.
	if got := reserve(t, s, phone, ids[1], 2, time.Hour); !got.Reserved {
		t.Fatalf("a counted tracking id refused: %+v", got)
	}
	got := reserve(t, s, phone, ids[2], 2, time.Hour)
	if got.Reserved || got.RetryAfter <= 59*time.Minute || got.RetryAfter > time.Hour {
		t.Fatalf("third prompt = %+v, want refused for about an hour", got)
	}
	// Other phones are not affected.
	if got := reserve(t, s, other, uuid.NewString(), 2, time.Hour); !got.Reserved {
		t.Fatalf("another phone refused: %+v", got)
	}
	// A released slot is free again.
	if err := s.ReleasePrompt(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if got := reserve(t, s, phone, ids[2], 2, time.Hour); !got.Reserved {
		t.Fatalf("refused after a release: %+v", got)
	}

	// Past the window the oldest prompts no longer count, and the wait
	// is until the oldest one in the window leaves it.
	db.MustExec(`UPDATE phone_prompts SET created_at = now() - interval '50 minutes' WHERE tracking_id = $1`, ids[1])
	got = reserve(t, s, phone, uuid.NewString(), 2, time.Hour)
	if got.Reserved || got.RetryAfter < 9*time.Minute || got.RetryAfter > 10*time.Minute {
		t.Fatalf("refused = %+v, want a wait of about 10m (the oldest prompt's)", got)
	}
	db.MustExec(`UPDATE phone_prompts SET created_at = now() - interval '61 minutes' WHERE tracking_id = $1`, ids[1])
	if got := reserve(t, s, phone, uuid.NewString(), 2, time.Hour); !got.Reserved {
		t.Fatalf("refused once the oldest prompt left the window: %+v", got)
	}

	// The purge deletes what is older than the window, and only that.
	n, err := s.PurgePrompts(ctx, time.Hour, 100)
	if err != nil || n != 1 {
		t.Fatalf("PurgePrompts = %d, %v; want 1", n, err)
	}
	var left int
	if err := db.Get(&left, `SELECT count(*) FROM phone_prompts`); err != nil || left != 3 {
		t.Fatalf("%d prompts left, %v; want 3", left, err)
	}
}

// Concurrent requests for one phone, as from several api instances (each
// with its own connection): exactly the limit gets through.
func TestReservePromptConcurrent(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	s := store.New(db)
	const phone, limit, requests = "254712000003", 5, 40
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		reserved int
	)
	for range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slot, err := s.ReservePrompt(context.Background(), phone, uuid.NewString(), limit, time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			if slot.Reserved {
				mu.Lock()
				reserved++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if reserved != limit {
		t.Errorf("%d of %d concurrent requests reserved a slot, want %d", reserved, requests, limit)
	}
}

func TestReservePromptRefusesBadArguments(t *testing.T) {
	t.Parallel()
	s := store.New(pgtest.New(t))
	for _, tc := range []struct {
		name, phone, id string
		max             int
		window          time.Duration
	}{
		{"no phone", "", uuid.NewString(), 1, time.Hour},
		{"not a uuid", "254712000004", "x", 1, time.Hour},
		{"max 0", "254712000004", uuid.NewString(), 0, time.Hour},
		{"no window", "254712000004", uuid.NewString(), 1, 0},
	} {
		if _, err := s.ReservePrompt(context.Background(), tc.phone, tc.id, tc.max, tc.window); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}
