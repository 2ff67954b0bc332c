package store

import (
	"context"
	"fmt"

	"github.com/lib/pq"
)

// Queued is the answer of CountQueued.
type Queued struct {
	// Count is the client's records not yet dispatched (stage 0).
	Count int
	// Seen are those of the asked tracking ids that the read model has,
	// at any stage: they are in Count if they are still queued.
	Seen []string
}

// CountQueued counts client's requests accepted and not yet dispatched
// (stage 0) in the read model, and says which of ids it has already: the
// api counts those it accepted itself until the projector has written them.
// Every id must be a UUID.
func (s *Store) CountQueued(ctx context.Context, client string, ids []string) (Queued, error) {
	var r struct {
		Count int            `db:"queued"`
		Seen  pq.StringArray `db:"seen"`
	}
	if ids == nil {
		ids = []string{}
	}
	err := s.db.GetContext(ctx, &r, `
		SELECT (SELECT count(*) FROM stk_pushes WHERE client = $1 AND stage = 0) AS queued,
		       COALESCE((SELECT array_agg(tracking_id::text) FROM stk_pushes WHERE tracking_id = ANY($2::uuid[])), '{}') AS seen`,
		client, pq.Array(ids))
	if err != nil {
		return Queued{}, fmt.Errorf("count queued requests: %w", err)
	}
	return Queued{Count: r.Count, Seen: r.Seen}, nil
}
