package store_test

import (
	"context"
	"testing"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events"
)

const benchBatch = 256

// benchEvents is a batch as the projector sees one: the three events of
// payments, interleaved with those of others.
func benchEvents() []events.Event {
	evs := make([]events.Event, 0, benchBatch)
	for len(evs) < benchBatch {
		s := newStory()
		evs = append(evs, s.requested, s.dispatched, s.success)
	}
	return evs[:benchBatch]
}

// BenchmarkApply applies batches of 256 events: new payments, and the same
// batch again as after a redelivery (every event a no-op).
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	st := store.New(pgtest.New(b))

	b.Run("new", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			evs := benchEvents()
			b.StartTimer()
			if err := st.Apply(ctx, evs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(benchBatch*b.N)/b.Elapsed().Seconds(), "events/s")
	})
	// A small batch of completions of payments already dispatched: the
	// batch a completion waits in at a few hundred payments/s, where a
	// batch's round trips to Postgres, not its rows, take the time.
	b.Run("completions", func(b *testing.B) {
		const n = 8
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			var earlier, completions []events.Event
			for range n {
				s := newStory()
				earlier = append(earlier, s.requested, s.dispatched)
				completions = append(completions, s.success)
			}
			if err := st.Apply(ctx, earlier); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := st.Apply(ctx, completions); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redelivered", func(b *testing.B) {
		evs := benchEvents()
		if err := st.Apply(ctx, evs); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := st.Apply(ctx, evs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(benchBatch*b.N)/b.Elapsed().Seconds(), "events/s")
	})
}
