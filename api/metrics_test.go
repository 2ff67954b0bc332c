package api

import (
	"testing"

	"github.com/stkgate/stkgate/events/kit/metrics"
)

// BenchmarkCreateMetrics is the accept path with metrics off (a nil
// Registry: no middleware, one nil check per count) and on, for
// docs/METRICS.md.
func BenchmarkCreateMetrics(b *testing.B) {
	b.Run("off", func(b *testing.B) { benchmarkCreate(b, func(*Options) {}) })
	b.Run("on", func(b *testing.B) { benchmarkCreate(b, func(o *Options) { o.Metrics = metrics.New("api") }) })
}
