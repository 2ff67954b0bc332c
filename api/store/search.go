package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/stkgate/stkgate/events"
)

// SearchFilter narrows Search; a zero field does not.
type SearchFilter struct {
	// Reference is the client's reference, matched exactly.
	Reference string
	// Phone is 254XXXXXXXXX, matched exactly.
	Phone string
	// Status is "0" or "1" (the record's status) or a label of the status
	// table (events.Outcome): "Pending", "Success", …, "Failed".
	Status string
	// Since keeps the records created at or after it.
	Since time.Time
}

// Position is a record's place in Search's order: created_at, then id,
// both descending. A page goes on after the last record of the one before.
type Position struct {
	CreatedAt time.Time
	ID        int64
}

// StatusFilters are the values SearchFilter.Status takes: the record's
// status, then the labels of the status table.
func StatusFilters() []string {
	return []string{"0", "1", events.LabelPending, events.LabelSuccess, events.LabelCancelled,
		events.LabelInsufficient, events.LabelTimedOut, events.LabelExpired, events.LabelUnknown, events.LabelFailed}
}

// DefaultSearchTimeout is Store.SearchTimeout's default.
const DefaultSearchTimeout = 2 * time.Second

// ErrSearchTimeout is a search that ran out of Store.SearchTimeout: too
// many of the client's records to look through for what it asks.
var ErrSearchTimeout = errors.New("search took too long")

// ErrBadFilter is a SearchFilter Search cannot run: a status it does not
// know, a limit below 1.
var ErrBadFilter = errors.New("bad search filter")

// Search returns up to limit of client's records that match f, newest
// first (created_at, then id, descending), from just after after (nil: from
// the newest). It reads the read model only: a request accepted but not
// projected yet is not found.
//
// The order is keyset pagination over an index (migrations 1 and 8): a
// page starts strictly after the position of the last record of the one
// before, so records inserted meanwhile neither repeat nor push others
// out of the walk, and a page costs the same however deep it is.
func (s *Store) Search(ctx context.Context, client string, f SearchFilter, after *Position, limit int) ([]Record, error) {
	q, args, err := searchQuery(client, f, after, limit)
	if err != nil {
		return nil, err
	}
	rows, err := s.searchRows(ctx, q, args)
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(rows))
	for _, r := range rows {
		rec, err := r.record()
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// searchRows runs a search's query in a read-only transaction bounded by
// SearchTimeout on the server's side (statement_timeout, which counts lock
// waits too): searches share the connection pool with every client's
// payments, and a filter few records match (a rare status over a long
// history) can read many rows; the server stops it, whatever the caller's
// deadline.
func (s *Store) searchRows(ctx context.Context, q string, args []any) ([]row, error) {
	timeout := s.SearchTimeout
	if timeout <= 0 {
		timeout = DefaultSearchTimeout
	}
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("search records: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // read-only: nothing to undo
	if _, err := tx.ExecContext(ctx, `SELECT set_config('statement_timeout', $1, true)`,
		strconv.FormatInt(timeout.Milliseconds(), 10)); err != nil {
		return nil, fmt.Errorf("search records: set statement_timeout: %w", err)
	}
	var rows []row
	if err := tx.SelectContext(ctx, &rows, q, args...); err != nil {
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Code == "57014" { // query_canceled
			return nil, fmt.Errorf("%w (%s): %w", ErrSearchTimeout, timeout, err)
		}
		return nil, fmt.Errorf("search records: %w", err)
	}
	return rows, nil
}

// searchQuery is Search's SQL and its arguments. Every value is an
// argument; only the shape of the WHERE clause depends on f.
func searchQuery(client string, f SearchFilter, after *Position, limit int) (string, []any, error) {
	if client == "" || limit < 1 {
		return "", nil, fmt.Errorf("%w: client %q, limit %d", ErrBadFilter, client, limit)
	}
	var (
		where = []string{"client = $1"}
		args  = []any{client}
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Reference != "" {
		where = append(where, "reference = "+arg(f.Reference))
	}
	if f.Phone != "" {
		where = append(where, "phone_number = "+arg(f.Phone))
	}
	if f.Status != "" {
		cond, err := statusCondition(f.Status, arg)
		if err != nil {
			return "", nil, err
		}
		where = append(where, cond)
	}
	if !f.Since.IsZero() {
		where = append(where, "created_at >= "+arg(f.Since.UTC()))
	}
	if after != nil {
		// A row comparison: Postgres reads it as one bound of the index
		// scan, which a pair of conditions joined by OR is not.
		where = append(where, fmt.Sprintf("(created_at, id) < (%s, %s)", arg(after.CreatedAt.UTC()), arg(after.ID)))
	}
	q := `SELECT ` + selectColumns + ` FROM stk_pushes WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY created_at DESC, id DESC LIMIT ` + arg(limit)
	return q, args, nil
}

// statusCondition is the WHERE condition of a status filter. A label is
// matched through the response codes events.Outcome labels with it, the one
// table of labels: the label itself is derived on read, not stored.
func statusCondition(status string, arg func(any) string) (string, error) {
	codes := events.LabelCodes()
	switch status {
	case "0", events.LabelPending:
		return "status = 0", nil
	case "1":
		return "status = 1", nil
	case events.LabelFailed:
		// Final, with a code the table does not list (NOT … = ANY: no
		// listed code matches; response_code is never NULL once final).
		var listed []string
		for _, c := range codes {
			listed = append(listed, c...)
		}
		slices.Sort(listed)
		return "status = 1 AND NOT response_code = ANY(" + arg(pq.Array(listed)) + ")", nil
	}
	if c, ok := codes[status]; ok {
		return "response_code = ANY(" + arg(pq.Array(c)) + ")", nil
	}
	return "", fmt.Errorf("%w: status %q", ErrBadFilter, status)
}
