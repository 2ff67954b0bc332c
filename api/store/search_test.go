package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events"
)

// insertRecord writes a record of client with response code code ("":
// pending) created at, straight into the table; its tracking id.
func insertRecord(t *testing.T, db *sqlx.DB, client, code string, at time.Time) string {
	t.Helper()
	id := uuid.NewString()
	if code == "" {
		db.MustExec(`INSERT INTO stk_pushes (tracking_id, client, phone_number, amount, reference, stage, created_at, updated_at)
			VALUES ($1, $2, '254712345678', 10, 'r', 0, $3, $3)`, id, client, at)
		return id
	}
	db.MustExec(`INSERT INTO stk_pushes (tracking_id, client, phone_number, amount, reference,
		status, response_code, stage, created_at, updated_at)
		VALUES ($1, $2, '254712345678', 10, 'r', 1, $3, 2, $4, $4)`, id, client, code, at)
	return id
}

// A status filter finds exactly the records events.Outcome gives that
// status or label, newest first: Failed is every final code the table does
// not list, whatever it is.
func TestSearchStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	s := store.New(db)
	codes := []string{"", "0", "1032", "1", "1037", "1019", events.CodeNoAnswer, events.CodeUnverifiedSuccess,
		"2001", "400.002.02", "stkgate.unreachable", events.CodeInvalidOutcome, "http.404", "", "0"}
	want := map[string][]string{}
	at := time.Date(2024, 3, 21, 11, 30, 1, 0, time.UTC)
	for i, code := range codes {
		id := insertRecord(t, db, "acme", code, at.Add(time.Duration(i)*time.Second))
		insertRecord(t, db, "globex", code, at.Add(time.Duration(i)*time.Second))
		status, label := events.Outcome(code)
		// Newest first: prepend.
		want[label] = append([]string{id}, want[label]...)
		want[string(rune('0'+status))] = append([]string{id}, want[string(rune('0'+status))]...)
	}
	for _, f := range store.StatusFilters() {
		recs, err := s.Search(ctx, "acme", store.SearchFilter{Status: f}, nil, 100)
		if err != nil {
			t.Fatalf("status %q: %v", f, err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, r.TrackingID)
		}
		w := want[f]
		if f == events.LabelPending {
			w = want["0"]
		}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Errorf("status %q (-want +got):\n%s", f, diff)
		}
		if len(got) == 0 {
			t.Errorf("status %q: the test has no record of it", f)
		}
	}
	if _, err := s.Search(ctx, "acme", store.SearchFilter{Status: "pending"}, nil, 10); !errors.Is(err, store.ErrBadFilter) {
		t.Errorf("unknown status: %v, want ErrBadFilter", err)
	}
	if _, err := s.Search(ctx, "", store.SearchFilter{}, nil, 10); !errors.Is(err, store.ErrBadFilter) {
		t.Errorf("no client: %v, want ErrBadFilter", err)
	}
}

// Every shape of search reads an index in the search's order, from the
// position on: with sequential scans, bitmap scans and sorts all but
// forbidden, the plan is one index scan with no sort above it, the page's
// position among its index conditions.
func TestSearchPlans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	after := &store.Position{CreatedAt: time.Now(), ID: 1 << 40}
	for _, tc := range []struct {
		name  string
		f     store.SearchFilter
		index string
	}{
		{"no filter", store.SearchFilter{}, "stk_pushes_client_created_idx"},
		{"reference", store.SearchFilter{Reference: "INV-1"}, "stk_pushes_client_reference_idx"},
		{"phone", store.SearchFilter{Phone: "254712345678"}, "stk_pushes_client_phone_idx"},
		{"status and since", store.SearchFilter{Status: "Failed", Since: time.Now().Add(-time.Hour)}, "stk_pushes_client_created_idx"},
		{"reference and status", store.SearchFilter{Reference: "INV-1", Status: "Success"}, "stk_pushes_client_reference_idx"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, args, err := store.SearchQuery("acme", tc.f, after, 51)
			if err != nil {
				t.Fatal(err)
			}
			tx, err := db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			tx.MustExec("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off")
			var lines []string
			if err := tx.Select(&lines, "EXPLAIN "+q, args...); err != nil {
				t.Fatal(err)
			}
			plan := strings.Join(lines, "\n")
			bound := false
			for _, l := range lines {
				bound = bound || strings.Contains(l, "Index Cond:") && strings.Contains(l, "ROW(created_at, id) <")
			}
			if !strings.Contains(plan, "Index Scan using "+tc.index) || strings.Contains(plan, "Sort") || !bound {
				t.Errorf("plan does not scan %s in order from the position:\n%s", tc.index, plan)
			}
		})
	}
}

// A search holds its connection for SearchTimeout at most: one that cannot
// finish (here, waiting on a lock, as a scan of a huge table would take
// long) ends with ErrSearchTimeout, not when the caller gives up. Searches
// share the pool with every client's payments.
func TestSearchTimeout(t *testing.T) {
	t.Parallel()
	// The caller's deadline is far: without a timeout of its own the
	// search would wait for it, and fail with it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.New(t)
	s := store.New(db)
	s.SearchTimeout = 200 * time.Millisecond
	insertRecord(t, db, "acme", "0", time.Now())
	tx := db.MustBegin()
	defer tx.Rollback()
	tx.MustExec(`LOCK TABLE stk_pushes IN ACCESS EXCLUSIVE MODE`)

	_, err := s.Search(ctx, "acme", store.SearchFilter{Status: events.LabelFailed}, nil, 10)
	if !errors.Is(err, store.ErrSearchTimeout) || ctx.Err() != nil {
		t.Fatalf("search under a lock: %v (caller's context: %v), want ErrSearchTimeout", err, ctx.Err())
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if recs, err := s.Search(ctx, "acme", store.SearchFilter{}, nil, 10); err != nil || len(recs) != 1 {
		t.Fatalf("search after the lock: %d records, %v", len(recs), err)
	}
}
