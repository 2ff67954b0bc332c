package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	// -ldflags=-w: no DWARF, as make test links its test binaries. The
	// fault test (deploy/chaos) builds the same beside this one, into the
	// same directory: one of the two links them. Built before the run's
	// deadline starts: on a slow machine the links took 2m20s of it.
	bin, err := binaries.Shared(context.Background(), root, []string{"-race", "-ldflags=-w"}, func(f string, a ...any) { fmt.Fprintf(&out, "bench: "+f+"\n", a...) })
	if err != nil {
		t.Fatal(err)
	}
	// A round of 400 ms (and a quarter of that warming up) is hundreds of
	// requests of each closed loop: enough to see a path work, and the
	// closed loops' 3 s of full cores instead of 7.5 s.
	o := Options{Root: root, Bin: bin, Rounds: 1, Round: 400 * time.Millisecond, Conc: 4, ProjectN: 200,
		E2ERate: 50, E2EDuration: 2 * time.Second, E2ESettle: 3 * time.Minute, E2ESample: 250 * time.Millisecond, LatencyRate: 20, LatencyDuration: 2 * time.Second,
		SimDelay: 50 * time.Millisecond, PGNoSync: true, Out: &out, JSON: filepath.Join(t.TempDir(), "results.json")}
	// The end-to-end run's payments may take minutes to be final on a
	// machine as loaded as CI's (load average 9 on 2 cores: 99 of 100 final
	// after 68 s, one not within a 1-minute settle): a payment not final
	// after 3 minutes is lost, as make bench counts it.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
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
	// Where the end-to-end run's CPU went, by process, the machine last;
	// what JetStream's consumers had left at the load's end, and the
	// server's messages a payment.
	groups := map[string]coreUse{}
	for _, c := range rep.E2ECores {
		groups[c.Process] = c
	}
	for _, g := range []string{"bench (load, watcher, JetStream)", "dispatcher", "callback-ingest", "projector", "api", "postgres", everyProcess} {
		if c, ok := groups[g]; !ok || c.CPUMsPerS <= 0 || c.CPUMsPerPayment <= 0 {
			t.Errorf("end to end, %s: %+v, want its CPU a second and a payment", g, c)
		}
	}
	if n := len(rep.E2ECores); n == 0 || rep.E2ECores[n-1].Process != everyProcess {
		t.Errorf("end to end's use of the cores: %+v, want the machine's last", rep.E2ECores)
	}
	for _, line := range []string{"backlog at the load's end: STK/dispatcher ", "STK/projector ", "the NATS server took "} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("the run's log lacks %q", line)
		}
	}
	if len(rep.Services) != 4 {
		t.Errorf("%d services measured, want 4", len(rep.Services))
	}
	for _, u := range rep.Services {
		if u.PeakRSSMB <= 0 {
			t.Errorf("%s: no peak RSS", u.Service)
		}
		// Memory over the run: a look every 250 ms over some 2 s of
		// load, and the figures taken from those looks.
		if len(u.Samples) < 4 {
			t.Errorf("%s: %d memory samples, want a few", u.Service, len(u.Samples))
			continue
		}
		for _, s := range u.Samples {
			// HeapMB 0 is a heap not read (a slow /metrics).
			if s.RSSMB <= 0 || s.RSSMB > u.PeakRSSMB+1 || s.HeapMB < 0 || s.HeapMB > s.RSSMB {
				t.Errorf("%s: sample %+v, peak RSS %.1f MB: want RSS within the peak and any heap within RSS", u.Service, s, u.PeakRSSMB)
			}
		}
		if u.WarmAt < o.E2EDuration.Seconds()/5 || u.LoadEndAt < u.WarmAt || u.EndAt < u.LoadEndAt {
			t.Errorf("%s: times after warm-up %.1f s, at load end %.1f s, at end %.1f s: not in order", u.Service, u.WarmAt, u.LoadEndAt, u.EndAt)
		}
		if u.WarmRSSMB <= 0 || u.EndRSSMB <= 0 || u.SampledPeakRSSMB < u.EndRSSMB || u.WarmHeapMB <= 0 || u.EndHeapMB <= 0 {
			t.Errorf("%s: memory figures missing: %+v", u.Service, u)
		}
		if d := u.EndRSSMB - u.WarmRSSMB - u.RSSGrowthMB; d > 0.01 || d < -0.01 {
			t.Errorf("%s: growth %.2f MB, but %.2f → %.2f MB", u.Service, u.RSSGrowthMB, u.WarmRSSMB, u.EndRSSMB)
		}
	}
	if _, err := os.Stat(o.JSON); err != nil {
		t.Errorf("results not written: %v", err)
	}
}
