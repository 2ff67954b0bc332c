package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
)

// BenchmarkSearch reads pages of 50 from 500,000 records of 5 clients
// (100,000 each; 10,000 references and 5,000 phones per client; one in
// five a success, none expired): the first page, a page 90,000 records
// deep, each filter, and the worst case, a status no record has (the
// client's whole index is read to find that out).
func BenchmarkSearch(b *testing.B) {
	ctx := context.Background()
	db := pgtest.New(b)
	db.MustExec(`INSERT INTO stk_pushes (tracking_id, client, phone_number, amount, reference,
			status, response_code, transaction_code, stage, created_at, updated_at)
		SELECT gen_random_uuid(), 'c' || (i % 5), '2547' || lpad((i / 5 % 5000)::text, 8, '0'), 10,
			'R-' || (i / 5 % 10000),
			CASE WHEN i / 5 % 5 = 0 THEN 1 ELSE 0 END,
			CASE WHEN i / 5 % 5 = 0 THEN '0' END,
			CASE WHEN i / 5 % 5 = 0 THEN 'T' || i END,
			CASE WHEN i / 5 % 5 = 0 THEN 2 ELSE 0 END,
			timestamptz '2024-01-01' + i * interval '1 second', now()
		FROM generate_series(1, 500000) i`)
	db.MustExec("ANALYZE stk_pushes")
	s := store.New(db)

	deep, err := s.Search(ctx, "c1", store.SearchFilter{}, nil, 90000)
	if err != nil || len(deep) != 90000 {
		b.Fatalf("%d records, %v", len(deep), err)
	}
	last := deep[len(deep)-1]
	for _, bc := range []struct {
		name  string
		f     store.SearchFilter
		after *store.Position
		want  int
	}{
		{"first page", store.SearchFilter{}, nil, 50},
		{"page 90000 deep", store.SearchFilter{}, &store.Position{CreatedAt: last.CreatedAt, ID: last.ID}, 50},
		{"reference", store.SearchFilter{Reference: "R-4242"}, nil, 10},
		{"phone", store.SearchFilter{Phone: "254700004242"}, nil, 20},
		{"status Success", store.SearchFilter{Status: "Success"}, nil, 50},
		{"since a day ago", store.SearchFilter{Since: time.Date(2024, 1, 6, 0, 0, 0, 0, time.UTC)}, nil, 50},
		{"status none has", store.SearchFilter{Status: "Transaction Expired"}, nil, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				recs, err := s.Search(ctx, "c1", bc.f, bc.after, 50)
				if err != nil || len(recs) != bc.want {
					b.Fatalf("%d records, %v; want %d", len(recs), err, bc.want)
				}
			}
		})
	}
}
