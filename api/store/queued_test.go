package store_test

import (
	"context"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
)

// CountQueued counts a client's requests not yet dispatched, and only
// those, and names which of the asked ids the read model has.
func TestCountQueued(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	queued, dispatched, refused, done := newStory(), newStory(), newStory(), newStory()
	other := newStory()
	other.requested.Client = "globex"
	f.apply(queued.requested, dispatched.requested, dispatched.dispatched, refused.requested, refused.refused,
		done.requested, done.dispatched, done.success, other.requested)

	notYet := uuid.NewString() // accepted, not projected yet
	tests := []struct {
		client   string
		ids      []string
		want     int
		wantSeen []string
	}{
		{"acme", nil, 1, nil},
		{"acme", []string{queued.id, done.id, notYet}, 1, []string{queued.id, done.id}},
		{"globex", []string{other.id}, 1, []string{other.id}},
		{"initech", []string{notYet}, 0, nil},
	}
	for _, tc := range tests {
		got, err := f.db.CountQueued(context.Background(), tc.client, tc.ids)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got.Seen)
		slices.Sort(tc.wantSeen)
		if got.Count != tc.want || !slices.Equal(got.Seen, tc.wantSeen) {
			t.Errorf("%s %v: %d queued, seen %v; want %d, %v", tc.client, tc.ids, got.Count, got.Seen, tc.want, tc.wantSeen)
		}
	}
}

// BenchmarkCountQueued counts a client with 1000 requests queued among
// 10000 records, asking about 100 ids not projected yet.
func BenchmarkCountQueued(b *testing.B) {
	f := newFixture(b)
	evs := make([]events.Event, 0, 10000)
	for i := range 10000 {
		s := newStory()
		if i%10 == 0 {
			evs = append(evs, s.requested)
		} else {
			evs = append(evs, s.requested, s.dispatched)
		}
	}
	for len(evs) > 0 {
		n := min(len(evs), 1000)
		f.apply(evs[:n]...)
		evs = evs[n:]
	}
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q, err := f.db.CountQueued(ctx, "acme", ids)
		if err != nil || q.Count != 1000 {
			b.Fatalf("%+v, %v", q, err)
		}
	}
}
