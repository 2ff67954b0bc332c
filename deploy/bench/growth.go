package main

// Memory over the end-to-end run: every service's resident set (VmRSS,
// from /proc) and Go heap in use (go_memstats_heap_inuse_bytes, from its
// admin server's /metrics) at a fixed interval, and the growth between the
// end of the run's first fifth and its end.

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stkgate/stkgate/deploy/binaries"
)

// memSample is one look at a service's memory.
type memSample struct {
	At     float64 `json:"t_s"` // seconds since the load began
	RSSMB  float64 `json:"rss_mb"`
	HeapMB float64 `json:"heap_inuse_mb,omitempty"` // 0: not read
}

// heapMetric is the Go collector's series of the heap's spans in use.
const heapMetric = "go_memstats_heap_inuse_bytes"

// sampler looks at every service's memory every interval until stopped.
type sampler struct {
	start   time.Time
	pids    map[string]int
	metrics map[string]string // service → its admin server's host:port
	client  *http.Client

	mu      sync.Mutex
	samples map[string][]memSample
	err     error // the first failed read of /proc
	heapErr error // the first failed read of a heap: logged, not fatal
}

func newSampler(s *stack, start time.Time) *sampler {
	m := &sampler{start: start, pids: map[string]int{}, metrics: s.metrics,
		client: &http.Client{Timeout: 5 * time.Second}, samples: map[string][]memSample{}}
	for _, name := range services {
		m.pids[name] = s.procs[name].Pid()
	}
	return m
}

// run looks now and every interval until stop is closed or ctx done (a
// look under way finishes: stop cancels none of its reads).
func (m *sampler) run(ctx context.Context, stop <-chan struct{}, every time.Duration) {
	if every <= 0 {
		every = 10 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		m.look(ctx)
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// look samples every service once, and says when (t_s).
func (m *sampler) look(ctx context.Context) float64 {
	at := round(time.Since(m.start).Seconds(), 1)
	for _, name := range services {
		u, err := binaries.UsageOf(m.pids[name])
		if err != nil {
			m.fail(&m.err, fmt.Errorf("%s: %w", name, err))
			continue
		}
		heap, err := m.heap(ctx, name)
		if err != nil {
			m.fail(&m.heapErr, fmt.Errorf("%s heap: %w", name, err))
		}
		m.mu.Lock()
		m.samples[name] = append(m.samples[name], memSample{At: at, RSSMB: round(mb(u.RSS), 2), HeapMB: round(heap/(1<<20), 2)})
		m.mu.Unlock()
	}
	return at
}

func (m *sampler) fail(into *error, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if *into == nil {
		*into = err
	}
}

// heap reads the service's Go heap in use, in bytes, from its /metrics.
func (m *sampler) heap(ctx context.Context, name string) (float64, error) {
	addr := m.metrics[name]
	if addr == "" {
		return 0, fmt.Errorf("no admin address")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// go_memstats_heap_inuse_bytes{service="api"} 1.2e+07
		if rest, ok := strings.CutPrefix(line, heapMetric); ok && (strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, " ")) {
			f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
			if len(f) == 0 {
				return 0, fmt.Errorf("%q", line)
			}
			return strconv.ParseFloat(f[0], 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s", heapMetric)
}

// growth fills u's memory figures from samples: warm is the first sample
// at or after warmAt (the end of the load's first fifth), loadEnd the
// last at or before loadEndAt, end the last.
func (u *serviceUsage) growth(samples []memSample, warmAt, loadEndAt float64) {
	// The look at the load's end may interleave with the ticker's.
	slices.SortStableFunc(samples, func(a, b memSample) int { return cmp.Compare(a.At, b.At) })
	u.Samples = samples
	if len(samples) == 0 {
		return
	}
	warm, loadEnd, end := samples[len(samples)-1], samples[0], samples[len(samples)-1]
	for _, s := range samples {
		if s.At >= warmAt {
			warm = s
			break
		}
	}
	for _, s := range samples {
		if s.At <= loadEndAt {
			loadEnd = s
		}
	}
	u.WarmAt, u.WarmRSSMB, u.WarmHeapMB = warm.At, warm.RSSMB, warm.HeapMB
	u.LoadEndAt, u.LoadEndRSSMB = loadEnd.At, loadEnd.RSSMB
	u.EndAt, u.EndRSSMB, u.EndHeapMB = end.At, end.RSSMB, end.HeapMB
	u.RSSGrowthMB, u.HeapGrowthMB = round(end.RSSMB-warm.RSSMB, 2), round(end.HeapMB-warm.HeapMB, 2)
	if minutes := (end.At - warm.At) / 60; minutes > 0 {
		u.RSSGrowthPerMin, u.HeapGrowthPerMin = round(u.RSSGrowthMB/minutes, 3), round(u.HeapGrowthMB/minutes, 3)
	}
	for _, s := range samples {
		u.SampledPeakRSSMB = max(u.SampledPeakRSSMB, s.RSSMB)
	}
}

func mb(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// round is x to places decimals, for a readable results.json.
func round(x float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(x*p) / p
}
