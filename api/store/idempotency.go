package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Idempotency keys: the api claims a client's key before it publishes
// stk.requested, and the claim tells every later request with that key which
// tracking id it stands for. Times are Postgres's clock, not the api's, so
// that several api instances with skewed clocks agree on leases and expiry.

// ClaimOutcome is what ClaimKey found.
type ClaimOutcome int

// Outcomes of ClaimKey.
const (
	// ClaimNew: the key was free (or had expired); the caller holds it with
	// the tracking id it proposed and must publish stk.requested.
	ClaimNew ClaimOutcome = iota + 1
	// ClaimTakenOver: the key was pending and its lease had run out (the
	// api holding it crashed, or did not learn whether its publish was
	// stored); the caller now holds it with the key's tracking id and must
	// publish stk.requested with that id again.
	ClaimTakenOver
	// ClaimDone: the key's request was accepted; TrackingID is its id.
	ClaimDone
	// ClaimBusy: another request holds the key and its lease runs.
	ClaimBusy
	// ClaimMismatch: the key was used with another request.
	ClaimMismatch
)

func (o ClaimOutcome) String() string {
	switch o {
	case ClaimNew:
		return "new"
	case ClaimTakenOver:
		return "taken over"
	case ClaimDone:
		return "done"
	case ClaimBusy:
		return "busy"
	case ClaimMismatch:
		return "mismatch"
	}
	return fmt.Sprintf("ClaimOutcome(%d)", int(o))
}

// KeyClaim is the answer of ClaimKey.
type KeyClaim struct {
	Outcome ClaimOutcome
	// TrackingID is the key's tracking id; empty for ClaimMismatch.
	TrackingID string
	// Holder identifies the caller's claim (ClaimNew, ClaimTakenOver) for
	// CompleteKey, ReleaseKey and EndLease.
	Holder string
}

// ClaimArgs are the arguments of ClaimKey.
type ClaimArgs struct {
	Client      string
	Key         string
	RequestHash string
	// TrackingID is the id a new claim takes; a UUID.
	TrackingID string
	// TTL is how long the key is kept from its claim.
	TTL time.Duration
	// Lease is how long a pending claim keeps other requests out.
	Lease time.Duration
}

// maxClaimRounds bounds ClaimKey's loop: each round loses a race only to a
// request that changed the row in between, which cannot go on for long.
const maxClaimRounds = 8

// ErrClaimContended is returned by ClaimKey when the key changed under it
// round after round.
var ErrClaimContended = errors.New("idempotency key contended")

// ClaimKey claims the idempotency key a.Key of a.Client for a request whose
// canonical hash is a.RequestHash, or reports who has it. An expired key is
// forgotten and claimed anew. Safe for concurrent callers: of requests with
// the same key, at most one holds it at any time.
func (s *Store) ClaimKey(ctx context.Context, a ClaimArgs) (KeyClaim, error) {
	id, err := uuid.Parse(a.TrackingID)
	if err != nil {
		return KeyClaim{}, fmt.Errorf("claim idempotency key: tracking id %q is not a UUID", a.TrackingID)
	}
	if a.Client == "" || a.Key == "" || a.RequestHash == "" || a.TTL <= 0 || a.Lease <= 0 {
		return KeyClaim{}, errors.New("claim idempotency key: client, key, hash, TTL and lease are required")
	}
	ttl, lease := a.TTL.Microseconds(), a.Lease.Microseconds()
	for range maxClaimRounds {
		holder := uuid.NewString()
		var got string
		err := s.db.GetContext(ctx, &got, `
			INSERT INTO idempotency_keys (client, key, request_hash, tracking_id, state, holder,
				lease_until, created_at, updated_at, expires_at)
			VALUES ($1, $2, $3, $4, 'pending', $5,
				now() + $6 * interval '1 microsecond', now(), now(), now() + $7 * interval '1 microsecond')
			ON CONFLICT (client, key) DO NOTHING
			RETURNING tracking_id`,
			a.Client, a.Key, a.RequestHash, id.String(), holder, lease, ttl)
		if err == nil {
			return KeyClaim{Outcome: ClaimNew, TrackingID: got, Holder: holder}, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return KeyClaim{}, fmt.Errorf("claim idempotency key: %w", err)
		}

		var cur struct {
			Hash       string `db:"request_hash"`
			TrackingID string `db:"tracking_id"`
			State      string `db:"state"`
			Holder     string `db:"holder"`
			LeaseOver  bool   `db:"lease_over"`
			Expired    bool   `db:"expired"`
		}
		err = s.db.GetContext(ctx, &cur, `
			SELECT request_hash, tracking_id, state, holder,
				lease_until <= now() AS lease_over, expires_at <= now() AS expired
			FROM idempotency_keys WHERE client = $1 AND key = $2`, a.Client, a.Key)
		if errors.Is(err, sql.ErrNoRows) {
			continue // released or purged in between: try the insert again
		}
		if err != nil {
			return KeyClaim{}, fmt.Errorf("read idempotency key: %w", err)
		}
		switch {
		case cur.Expired:
			// Forget it, unless another request replaced it in between.
			if _, err := s.db.ExecContext(ctx, `
				DELETE FROM idempotency_keys
				WHERE client = $1 AND key = $2 AND holder = $3 AND expires_at <= now()`,
				a.Client, a.Key, cur.Holder); err != nil {
				return KeyClaim{}, fmt.Errorf("forget expired idempotency key: %w", err)
			}
			continue
		case cur.Hash != a.RequestHash:
			return KeyClaim{Outcome: ClaimMismatch}, nil
		case cur.State == KeyDone:
			return KeyClaim{Outcome: ClaimDone, TrackingID: cur.TrackingID}, nil
		case !cur.LeaseOver:
			return KeyClaim{Outcome: ClaimBusy, TrackingID: cur.TrackingID}, nil
		}
		// Pending with its lease over: take it over, unless someone else
		// did in between (then the holder changed and nothing is updated).
		res, err := s.db.ExecContext(ctx, `
			UPDATE idempotency_keys
			SET holder = $4, lease_until = now() + $5 * interval '1 microsecond', updated_at = now()
			WHERE client = $1 AND key = $2 AND holder = $3 AND state = 'pending' AND lease_until <= now()`,
			a.Client, a.Key, cur.Holder, holder, lease)
		if err != nil {
			return KeyClaim{}, fmt.Errorf("take over idempotency key: %w", err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 1 {
			return KeyClaim{Outcome: ClaimTakenOver, TrackingID: cur.TrackingID, Holder: holder}, nil
		}
	}
	return KeyClaim{}, fmt.Errorf("claim idempotency key: %w", ErrClaimContended)
}

// States of an idempotency key.
const (
	KeyPending = "pending"
	KeyDone    = "done"
)

// ErrNotHolder is returned by CompleteKey, ReleaseKey and EndLease when the
// caller no longer holds the claim: its lease ran out and another request
// took the key over, or it expired and was forgotten.
var ErrNotHolder = errors.New("idempotency key claim no longer held")

// CompleteKey records that the claim's stk.requested is stored: from now on
// the key answers with its tracking id.
func (s *Store) CompleteKey(ctx context.Context, client, key, holder string) error {
	return s.changeClaim(ctx, "complete", `
		UPDATE idempotency_keys SET state = 'done', updated_at = now()
		WHERE client = $1 AND key = $2 AND holder = $3`, client, key, holder)
}

// ReleaseKey forgets a pending claim whose stk.requested was certainly not
// stored, so that a retry with the key starts afresh.
func (s *Store) ReleaseKey(ctx context.Context, client, key, holder string) error {
	return s.changeClaim(ctx, "release", `
		DELETE FROM idempotency_keys
		WHERE client = $1 AND key = $2 AND holder = $3 AND state = 'pending'`, client, key, holder)
}

// EndLease keeps a pending claim and its tracking id but lets the next
// request with the key take it over at once: the publish's outcome is
// unknown, and the retry must publish the same tracking id again.
func (s *Store) EndLease(ctx context.Context, client, key, holder string) error {
	return s.changeClaim(ctx, "end lease of", `
		UPDATE idempotency_keys SET lease_until = now(), updated_at = now()
		WHERE client = $1 AND key = $2 AND holder = $3 AND state = 'pending'`, client, key, holder)
}

func (s *Store) changeClaim(ctx context.Context, what, query, client, key, holder string) error {
	res, err := s.db.ExecContext(ctx, query, client, key, holder)
	if err != nil {
		return fmt.Errorf("%s idempotency key: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s idempotency key: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s idempotency key: %w", what, ErrNotHolder)
	}
	return nil
}

// PurgeExpiredKeys deletes up to limit expired keys, oldest first, and says
// how many it deleted; call it again while it returns limit. Small batches
// keep each statement's locks short.
func (s *Store) PurgeExpiredKeys(ctx context.Context, limit int) (int64, error) {
	res, err := s.db.ExecContext(ctx, `
		DELETE FROM idempotency_keys WHERE (client, key) IN (
			SELECT client, key FROM idempotency_keys
			WHERE expires_at <= now()
			ORDER BY expires_at
			LIMIT $1
			FOR UPDATE SKIP LOCKED)
		AND expires_at <= now()`, limit)
	if err != nil {
		return 0, fmt.Errorf("purge idempotency keys: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("purge idempotency keys: %w", err)
	}
	return n, nil
}
