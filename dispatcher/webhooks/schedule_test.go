package webhooks_test

import (
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/webhooks"
)

// TestDefaultBackoffSpansADay: the default schedule retries for at least
// 24 hours, however the jitter falls, and never waits longer than Max plus
// its jitter.
func TestDefaultBackoffSpansADay(t *testing.T) {
	b := webhooks.DefaultBackoff
	want := []time.Duration{10 * time.Second, 40 * time.Second, 160 * time.Second, 640 * time.Second, 2560 * time.Second, 10240 * time.Second, 6 * time.Hour, 6 * time.Hour}
	for i, w := range want {
		if got := b.Wait(i + 1); got != w {
			t.Errorf("Wait(%d) = %s, want %s", i+1, got, w)
		}
	}
	for range 200 {
		first := time.Unix(0, 0)
		now := first
		attempts := 1
		for {
			d, ok := b.Next(attempts, first, now)
			if !ok {
				break
			}
			if limit := time.Duration(float64(b.Max) * (1 + b.Jitter)); d > limit || d <= 0 {
				t.Fatalf("wait %s after attempt %d", d, attempts)
			}
			now = now.Add(d)
			attempts++
		}
		if span := now.Sub(first); span < 24*time.Hour || span > 24*time.Hour+time.Duration(float64(b.Max)*(1+b.Jitter)) {
			t.Fatalf("retries span %s over %d attempts, want 24h to 24h+Max", span, attempts)
		}
		if attempts < 8 || attempts > 13 {
			t.Fatalf("%d attempts", attempts)
		}
	}
}
