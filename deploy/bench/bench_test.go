package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stkgate/stkgate/deploy/binaries"
)

// TestSmoke runs the whole benchmark for a few seconds so that it does not
// rot: it asserts that every path ran and gave sane figures, never how fast
// it went (speed is measured by make bench, not asserted).
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the whole stack")
	}
	root, err := binaries.FindRoot()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	// -race: make test has compiled every package so already, and only
	// the links are left; a plain build would compile the tree again.
	// -ldflags=-w: no DWARF, as make test links its test binaries.
	o := Options{Root: root, BuildFlags: []string{"-race", "-ldflags=-w"}, Rounds: 1, Round: time.Second, Conc: 4, ProjectN: 200,
		E2ERate: 50, E2EDuration: 2 * time.Second, E2ESettle: time.Minute, LatencyRate: 20, LatencyDuration: 2 * time.Second,
		SimDelay: 50 * time.Millisecond, PGNoSync: true, Out: &out, JSON: filepath.Join(t.TempDir(), "results.json")}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rep, err := Run(ctx, o)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"accept", "poll", "callback", "project", "request to visible", "callback to visible", "end to end"}
	if len(rep.Results) != len(want) {
		t.Fatalf("%d results, want %d", len(rep.Results), len(want))
	}
	for i, r := range rep.Results {
		if r.Path != want[i] || r.Ours <= 0 || r.Unit == "" {
			t.Errorf("result %d: %+v, want path %q with a figure", i, r, want[i])
		}
		if i < 4 && (r.Baseline <= 0 || r.Ratio <= 0) {
			t.Errorf("%s: no baseline figure: %+v", r.Path, r)
		}
		if r.P99 < r.P50 {
			t.Errorf("%s: p99 %.1f below p50 %.1f", r.Path, r.P99, r.P50)
		}
	}
	if e2e := rep.Results[6]; e2e.Lost == nil || *e2e.Lost != 0 {
		t.Errorf("end to end lost payments: %+v", e2e)
	}
	if len(rep.Services) != 4 {
		t.Errorf("%d services measured, want 4", len(rep.Services))
	}
	for _, u := range rep.Services {
		if u.PeakRSSMB <= 0 {
			t.Errorf("%s: no peak RSS", u.Service)
		}
	}
	if _, err := os.Stat(o.JSON); err != nil {
		t.Errorf("results not written: %v", err)
	}
}
