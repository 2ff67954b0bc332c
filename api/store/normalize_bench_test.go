package store_test

import (
	"testing"

	"github.com/stkgate/stkgate/api/store"
)

// BenchmarkNormalize is the CPU Apply spends cleaning a batch of 256
// events that need no cleaning (the usual case).
func BenchmarkNormalize(b *testing.B) {
	evs := benchEvents()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, ev := range evs {
			store.Normalize(ev)
		}
	}
}
