package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Prompts per phone: the api reserves a slot for a phone before it publishes
// a request for it, so that a phone is not prompted more than a number of
// times per window, whichever client asks and whichever api instance takes
// the request. Times are Postgres's clock, as for idempotency keys.

// phoneLockClass is the first key of the advisory lock a reservation holds
// on its phone (the second is the phone's hash): it keeps the phone locks
// apart from any other two-key advisory lock in the database. Advisory locks
// with one bigint key (goose's) are a separate space.
const phoneLockClass int32 = 0x73746b70 // "stkp"

// PromptSlot is the answer of ReservePrompt.
type PromptSlot struct {
	// Reserved: the request may be published. It is also true for a
	// tracking id that already had its slot (a retry of the same request).
	Reserved bool
	// RetryAfter is, when not Reserved, how long until the oldest prompt
	// in the window leaves it and a slot frees.
	RetryAfter time.Duration
}

// ReservePrompt reserves one of maxPrompts slots per window for phone, for the
// request trackingID, or says when the next one frees. A tracking id that
// has a slot already keeps it and is not counted again. Safe for concurrent
// callers on any number of api instances: the count and the insert run
// under a transaction-scoped advisory lock on the phone.
func (s *Store) ReservePrompt(ctx context.Context, phone, trackingID string, maxPrompts int, window time.Duration) (PromptSlot, error) {
	id, err := uuid.Parse(trackingID)
	if err != nil {
		return PromptSlot{}, fmt.Errorf("reserve prompt: tracking id %q is not a UUID", trackingID)
	}
	if phone == "" || maxPrompts < 1 || window <= 0 {
		return PromptSlot{}, errors.New("reserve prompt: phone, max and window are required")
	}
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return PromptSlot{}, fmt.Errorf("reserve prompt: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, phoneLockClass, phone); err != nil {
		return PromptSlot{}, fmt.Errorf("reserve prompt: lock phone: %w", err)
	}
	var counted bool
	if err := tx.GetContext(ctx, &counted, `SELECT EXISTS (SELECT 1 FROM phone_prompts WHERE tracking_id = $1)`, id.String()); err != nil {
		return PromptSlot{}, fmt.Errorf("reserve prompt: %w", err)
	}
	if counted {
		return PromptSlot{Reserved: true}, nil
	}
	// The maxPrompts-th newest prompt in the window: while there is one, the
	// phone is at its limit until it leaves the window.
	w := window.Microseconds()
	var leftUS int64
	err = tx.GetContext(ctx, &leftUS, `
		SELECT (EXTRACT(EPOCH FROM created_at + $3 * interval '1 microsecond' - now()) * 1000000)::bigint
		FROM phone_prompts
		WHERE phone = $1 AND created_at > now() - $3 * interval '1 microsecond'
		ORDER BY created_at DESC
		OFFSET $2 - 1 LIMIT 1`, phone, maxPrompts, w)
	switch {
	case err == nil:
		return PromptSlot{RetryAfter: max(time.Duration(leftUS)*time.Microsecond, 0)}, nil
	case !errors.Is(err, sql.ErrNoRows):
		return PromptSlot{}, fmt.Errorf("reserve prompt: count: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO phone_prompts (tracking_id, phone, created_at) VALUES ($1, $2, now())`,
		id.String(), phone); err != nil {
		return PromptSlot{}, fmt.Errorf("reserve prompt: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return PromptSlot{}, fmt.Errorf("reserve prompt: commit: %w", err)
	}
	return PromptSlot{Reserved: true}, nil
}

// ReleasePrompt gives back the slot of a request that was certainly not
// published: it prompted no one. Releasing a tracking id without a slot is
// no error.
func (s *Store) ReleasePrompt(ctx context.Context, trackingID string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM phone_prompts WHERE tracking_id = $1`, trackingID); err != nil {
		return fmt.Errorf("release prompt: %w", err)
	}
	return nil
}

// PurgePrompts deletes up to limit prompts older than window, oldest first,
// and says how many it deleted; call it again while it returns limit.
func (s *Store) PurgePrompts(ctx context.Context, window time.Duration, limit int) (int64, error) {
	res, err := s.db.ExecContext(ctx, `
		DELETE FROM phone_prompts WHERE tracking_id IN (
			SELECT tracking_id FROM phone_prompts
			WHERE created_at <= now() - $1 * interval '1 microsecond'
			ORDER BY created_at
			LIMIT $2
			FOR UPDATE SKIP LOCKED)`, window.Microseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("purge prompts: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("purge prompts: %w", err)
	}
	return n, nil
}
