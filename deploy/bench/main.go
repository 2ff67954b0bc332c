// Command bench measures stkgate's paths against the bare engines under
// them (issue 11): it builds the real binaries, starts an embedded
// JetStream, a private Postgres, the fake Daraja (callbacks after
// -sim-delay) and a bare baseline (deploy/cmd/bench-baseline), runs each
// pair in alternation (ours, baseline, ours, … -rounds times each) with a
// closed-loop load at -conc, then the end-to-end run (every service a
// process of its own, an open-loop load at -e2e-rate) and the latency run
// (-latency-rate). It prints a table of medians and ratios and writes
// -out (bench/results.json).
//
//	go run ./bench            (from deploy/; make bench)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/stkgate/stkgate/deploy/binaries"
)

// Options of a run.
type Options struct {
	Root string // the repository (holds go.work)
	Bin  string // binaries already built; empty: built into the run's directory
	// BuildFlags are go build's flags when Run builds the binaries (the
	// smoke test's -race reuses the race build make test compiled).
	BuildFlags      []string
	Rounds          int
	Round           time.Duration // one round of one side of a pair
	Conc            int           // the closed loop's concurrency
	ProjectN        int           // payments pre-filled per project round (three events each)
	E2ERate         float64
	E2EDuration     time.Duration
	E2ESettle       time.Duration // after the load, how long payments may take to be final
	E2ESample       time.Duration // how often every service's memory is read in the end-to-end run
	LatencyRate     float64
	LatencyDuration time.Duration
	SimDelay        time.Duration
	PGNoSync        bool
	Out             io.Writer
	JSON            string // where results go; empty: nowhere
	Keep            bool
	// Paths run, of accept, poll, callback, project, e2e and latency (poll
	// and callback run accept first); empty: all.
	Paths []string
	// ProfileDir, when set, is where every service writes its CPU and
	// allocations profiles (service.ProfileEnv).
	ProfileDir string
}

func (o Options) runs(path string) bool {
	return len(o.Paths) == 0 || slices.Contains(o.Paths, path) ||
		path == "accept" && (slices.Contains(o.Paths, "poll") || slices.Contains(o.Paths, "callback"))
}

// result is one path's line of the table and of results.json.
type result struct {
	Path     string  `json:"path"`
	Ours     float64 `json:"ours"`
	Baseline float64 `json:"baseline,omitempty"`
	Unit     string  `json:"unit"`
	Ratio    float64 `json:"ratio,omitempty"`
	// P50 and P99 are ours, BaselineP99 the baseline's, in milliseconds.
	P50         float64 `json:"p50_ms"`
	P99         float64 `json:"p99_ms"`
	BaselineP99 float64 `json:"baseline_p99_ms,omitempty"`
	// CPU and BaselineCPU are the serving process's CPU time per request
	// (per row for project), in microseconds: steadier than throughput on
	// a shared machine.
	CPU         float64 `json:"cpu_us,omitempty"`
	BaselineCPU float64 `json:"baseline_cpu_us,omitempty"`
	Lost        *int    `json:"lost,omitempty"`
}

// Report is a run's results.
type Report struct {
	Machine  string         `json:"machine"`
	Results  []result       `json:"results"`
	Services []serviceUsage `json:"services"`
	// CallbackSteps breaks the latency run's callback-to-visible down.
	CallbackSteps []step `json:"callback_steps,omitempty"`
	// LatencyCores is what the latency run's processes used of the cores,
	// and how long they waited for one.
	LatencyCores []coreUse `json:"latency_cores,omitempty"`
	// E2ECores is the same for the end-to-end run, from its first POST to
	// its last payment final, with each group's CPU per payment: where
	// the cores go, JetStream (in the bench's process) and Postgres
	// among them.
	E2ECores []coreUse `json:"e2e_cores,omitempty"`
}

type bench struct {
	o      Options
	s      *stack
	client *http.Client
	ids    []string  // tracking ids the accept rounds got
	cores  []coreUse // the latency run's use of the cores (latency)
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (Options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := Options{Out: os.Stdout}
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds of each side of each pair")
	fs.DurationVar(&o.Round, "round", 5*time.Second, "length of one round")
	fs.IntVar(&o.Conc, "conc", 32, "connections of the closed-loop load")
	fs.IntVar(&o.ProjectN, "project-n", 10000, "payments (three events each) pre-filled per project round")
	fs.Float64Var(&o.E2ERate, "e2e-rate", 1500, "payments per second offered in the end-to-end run")
	fs.DurationVar(&o.E2EDuration, "e2e-duration", 60*time.Second, "length of the end-to-end load")
	fs.DurationVar(&o.E2ESettle, "e2e-settle", 3*time.Minute, "after the end-to-end load, how long payments may take to be final (any not final by then count as lost)")
	fs.DurationVar(&o.E2ESample, "e2e-sample", 10*time.Second, "how often the end-to-end run reads every service's RSS and Go heap (and once at the load's end and at the end)")
	fs.Float64Var(&o.LatencyRate, "latency-rate", 200, "payments per second of the latency run")
	fs.DurationVar(&o.LatencyDuration, "latency-duration", 10*time.Second, "length of the latency run")
	fs.DurationVar(&o.SimDelay, "sim-delay", 200*time.Millisecond, "the Daraja fake's delay from a push to its callback")
	fs.BoolVar(&o.PGNoSync, "pg-nosync", false, "run Postgres with fsync off")
	fs.StringVar(&o.JSON, "out", "", "where the results go as JSON (default: bench/results.json under the repository)")
	fs.StringVar(&o.Root, "root", "", "the repository root (default: the directory holding go.work above the current one)")
	fs.StringVar(&o.Bin, "bin", "", "a directory of binaries already built")
	fs.BoolVar(&o.Keep, "keep", false, "keep the run's directory (logs, data)")
	paths := fs.String("paths", "", "comma-separated paths to run, of accept, poll, callback, project, e2e and latency (default: all)")
	fs.StringVar(&o.ProfileDir, "profile", "", "a directory where every service writes CPU and allocations profiles (STKGATE_PROFILE_DIR)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.Rounds < 1 || o.Round <= 0 || o.Conc < 1 || o.ProjectN < 4 || o.E2ERate <= 0 || o.LatencyRate <= 0 || o.E2ESettle <= 0 || o.E2ESample <= 0 {
		return o, errors.New("-rounds, -round, -conc, -project-n, -e2e-rate, -e2e-settle, -e2e-sample and -latency-rate must be positive")
	}
	if *paths != "" {
		o.Paths = strings.Split(*paths, ",")
	}
	if o.ProfileDir != "" {
		dir, err := filepath.Abs(o.ProfileDir)
		if err != nil {
			return o, err
		}
		o.ProfileDir = dir
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return o, err
		}
	}
	if o.Root == "" {
		var err error
		if o.Root, err = binaries.FindRoot(); err != nil {
			return o, err
		}
	}
	if o.JSON == "" {
		o.JSON = filepath.Join(o.Root, "bench", "results.json")
	}
	return o, nil
}

// Run does one run: the pairs in turn on one stack, then latency and end
// to end on a fresh one (the pairs leave requests no dispatcher took,
// which would be its backlog): a new JetStream and a new database of the
// same Postgres server, beside the same fake Daraja (stack.again); latency
// first, on an idle system.
func Run(ctx context.Context, o Options) (*Report, error) {
	bin := o.Bin
	if bin == "" {
		dir, err := os.MkdirTemp("", "stkgate-bench-bin-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		bin = dir
		if err := binaries.Build(ctx, o.Root, bin, o.BuildFlags, func(f string, a ...any) { fmt.Fprintf(o.Out, "bench: "+f+"\n", a...) },
			"api", "projector", "dispatcher", "callback-ingest", "daraja-sim", "bench-baseline"); err != nil {
			return nil, err
		}
	}
	b := &bench{o: o, s: &stack{o: o, bin: bin}, client: newClient(o.Conc)}
	defer func() { b.s.down() }()
	if err := b.s.up(ctx); err != nil {
		return nil, err
	}
	rep := &Report{Machine: machine()}
	steps := []struct {
		path string
		run  func(context.Context) (pair, error)
	}{{"accept", b.accept}, {"poll", b.poll}, {"callback", b.callback}, {"project", b.project}}
	for _, st := range steps {
		if !o.runs(st.path) {
			continue
		}
		p, err := st.run(ctx)
		if err != nil {
			return nil, err
		}
		rep.Results = append(rep.Results, p.result(st.path))
	}
	if o.runs("e2e") || o.runs("latency") {
		if err := b.s.again(ctx, "e2e"); err != nil {
			return nil, err
		}
		if err := b.s.start(ctx, services...); err != nil {
			return nil, err
		}
	}
	if o.runs("latency") {
		lat, steps, err := b.latency(ctx)
		if err != nil {
			return nil, err
		}
		rep.Results, rep.CallbackSteps, rep.LatencyCores = append(rep.Results, lat...), steps, b.cores
	}
	if o.runs("e2e") {
		e2e, use, cores, err := b.endToEnd(ctx)
		if err != nil {
			return nil, err
		}
		rep.Results, rep.Services, rep.E2ECores = append(rep.Results, e2e), use, cores
	}
	rep.Print(o.Out)
	if o.JSON != "" {
		if err := rep.write(o.JSON); err != nil {
			return rep, err
		}
		b.logf("results in %s", o.JSON)
	}
	return rep, nil
}

func (b *bench) logf(format string, args ...any) { b.s.logf(format, args...) }

// result is the pair's medians over its rounds.
func (p pair) result(path string) result {
	med := func(fs []figures, v func(figures) float64) float64 {
		var xs []float64
		for _, f := range fs {
			xs = append(xs, v(f))
		}
		slices.Sort(xs)
		if len(xs) == 0 {
			return 0
		}
		return xs[len(xs)/2]
	}
	rate := func(f figures) float64 { return f.perSecond() }
	p50 := func(f figures) float64 { return f.quantile(0.5) }
	p99 := func(f figures) float64 { return f.quantile(0.99) }
	r := result{Path: path, Ours: med(p.ours, rate), Baseline: med(p.baseline, rate), Unit: p.unit,
		P50: med(p.ours, p50), P99: med(p.ours, p99), BaselineP99: med(p.baseline, p99),
		CPU: med(p.ours, figures.cpuEach), BaselineCPU: med(p.baseline, figures.cpuEach)}
	if r.Baseline > 0 {
		r.Ratio = r.Ours / r.Baseline
	}
	return r
}

// Print writes the table.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n\n", r.Machine)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tours\tbaseline\tunit\tratio\tp50 ms\tp99 ms\tbaseline p99 ms\tCPU µs each\tbaseline CPU µs\t")
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%.1f\t%.1f\t%s\t%s\t%s\t\n", x.Path, x.Ours, orDash(x.Baseline, "%.0f"), x.Unit,
			orDash(x.Ratio, "%.2f×"), x.P50, x.P99, orDash(x.BaselineP99, "%.1f"), orDash(x.CPU, "%.0f"), orDash(x.BaselineCPU, "%.0f"))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	if len(r.CallbackSteps) > 0 {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "callback to visible, by step\tn\tp50 ms\tp90 ms\tp99 ms\t")
		for _, x := range r.CallbackSteps {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t\n", x.Step, x.N, x.P50, x.P90, x.P99)
		}
		_ = tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.LatencyCores) > 0 {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "latency run, process\tCPU ms/s\twaited for a core ms/s\t")
		for _, x := range r.LatencyCores {
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t\n", x.Process, x.CPUMsPerS, x.WaitMsPerS)
		}
		_ = tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.E2ECores) > 0 {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "end to end, process\tCPU ms/s\twaited for a core ms/s\tCPU ms/payment\t")
		for _, x := range r.E2ECores {
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.3f\t\n", x.Process, x.CPUMsPerS, x.WaitMsPerS, x.CPUMsPerPayment)
		}
		_ = tw.Flush()
		fmt.Fprintln(w)
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "service (end to end)\tpeak RSS MB\tCPU s\tCPU ms/payment\tRSS MB after warm-up\tat load end\tat end\tgrowth MB\tMB/min\theap MB after warm-up\tat end\theap MB/min\t")
	for _, u := range r.Services {
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%.3f\t%.1f (%.0f s)\t%.1f (%.0f s)\t%.1f (%.0f s)\t%+.1f\t%+.2f\t%.1f\t%.1f\t%+.2f\t\n",
			u.Service, u.PeakRSSMB, u.CPUSeconds, u.CPUPerPayment, u.WarmRSSMB, u.WarmAt, u.LoadEndRSSMB, u.LoadEndAt, u.EndRSSMB, u.EndAt,
			u.RSSGrowthMB, u.RSSGrowthPerMin, u.WarmHeapMB, u.EndHeapMB, u.HeapGrowthPerMin)
	}
	_ = tw.Flush()
}

func orDash(v float64, format string) string {
	if v == 0 {
		return "—"
	}
	return fmt.Sprintf(format, v)
}

func (r *Report) write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// machine names the machine: CPUs, model and load when the run began.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := cutField(line, "model name"); ok {
				model = v
				break
			}
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil && len(b) > 14 {
		load = ", load average " + string(b[:14])
	}
	return fmt.Sprintf("%d CPUs (%s)%s", runtime.NumCPU(), model, load)
}

func cutField(line, name string) (string, bool) {
	k, v, ok := strings.Cut(line, ":")
	if !ok || strings.TrimSpace(k) != name {
		return "", false
	}
	return strings.TrimSpace(v), true
}
