package main

// The stack a run sets up and tears down: binaries, Postgres, the fake
// Daraja, and every service supervised on ports it keeps for the run.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	_ "github.com/lib/pq" // the "postgres" driver

	"github.com/stkgate/stkgate/deploy/binaries"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/failpoint"
	"github.com/stkgate/stkgate/events/testkit/pgserver"
)

// setUp builds the binaries and starts Postgres, the fake Daraja, and every
// service, each on the ports it keeps for the run.
func (r *runner) setUp(ctx context.Context) error {
	if err := r.prepare(ctx); err != nil {
		return err
	}
	// Ports, fixed for the run so that restarts come back where clients
	// and Daraja look for them.
	var natsPort, apiPort, cbPort int
	var err error
	for _, p := range []*int{&natsPort, &apiPort, &cbPort} {
		if *p, err = freePort(); err != nil {
			return err
		}
	}
	r.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	r.apiURL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	r.cbBase = fmt.Sprintf("http://127.0.0.1:%d", cbPort)

	if err := r.startSim(ctx, r.o.Bin); err != nil {
		return err
	}
	env, err := r.env(apiPort, cbPort)
	if err != nil {
		return err
	}
	if err := r.addProcs(r.o.Bin, natsPort, env); err != nil {
		return err
	}
	if err := r.startAllReady(ctx, r.order); err != nil {
		return err
	}
	r.logf("stack up: api %s, callbacks %s, nats %s, daraja-sim %s, logs in %s", r.apiURL, r.cbBase, r.natsURL, r.simURL, r.logs)
	r.db, err = sql.Open("postgres", r.pg.URL("postgres"))
	return err
}

// startAllReady starts the processes names for the first time, in order,
// each once the one before it serves, and waits until every one is ready.
// A process with no readiness check is ready once it has run for
// stableFor: that is waited for from its start, beside the starts after
// it. Waited for one after another, the projector's and the two
// dispatchers' were 6 s of every TestChaosSmall's start-up.
func (r *runner) startAllReady(ctx context.Context, names []string) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	// fail returns err with the failures of the waits already begun (a
	// projector that crashed before the process after it failed).
	fail := func(err error) error {
		wg.Wait()
		return errors.Join(append([]error{err}, errs...)...)
	}
	for _, name := range names {
		p := r.procs[name]
		if p.ready != nil {
			if err := r.startReady(ctx, name); err != nil {
				return fail(err)
			}
			continue
		}
		if err := p.start(); err != nil {
			return fail(err)
		}
		wg.Go(func() {
			if err := p.waitReady(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("first start: %w (see %s)", err, filepath.Join(r.logs, name+".log")))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// startReady starts the process name for the first time and waits until
// it is ready.
func (r *runner) startReady(ctx context.Context, name string) error {
	p := r.procs[name]
	if err := p.start(); err != nil {
		return err
	}
	if err := p.waitReady(ctx); err != nil {
		return fmt.Errorf("first start: %w (see %s)", err, filepath.Join(r.logs, name+".log"))
	}
	return nil
}

// prepare makes the run's directory, builds the binaries unless
// Options.Bin holds them, and starts Postgres.
func (r *runner) prepare(ctx context.Context) error {
	// Postgres runs as user postgres when we are root: the directory must
	// be one it can enter, which t.TempDir is not.
	work, err := os.MkdirTemp("", "stkgate-chaos-")
	if err != nil {
		return err
	}
	r.work, r.logs = work, filepath.Join(work, "logs")
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(r.logs, 0o755); err != nil {
		return err
	}
	if r.o.Bin == "" {
		r.o.Bin = filepath.Join(work, "bin")
		if err := binaries.Build(ctx, r.o.Root, r.o.Bin, nil, r.logf); err != nil {
			return err
		}
	}
	return r.startPostgres(ctx)
}

// tearDown stops what setUp started, in reverse, and removes the run's
// directory unless keep.
func (r *runner) tearDown(keep bool) {
	if r.db != nil {
		_ = r.db.Close()
	}
	r.stopAll()
	if r.nc != nil {
		r.nc.Close()
	}
	for _, c := range r.closers {
		c()
	}
	if r.stopSim != nil {
		r.stopSim()
		_ = r.simLog.Close()
	}
	if r.pg != nil {
		r.pgMu.Lock()
		_ = r.pg.Stop()
		r.pgMu.Unlock()
	}
	if r.pgLog != nil {
		_ = r.pgLog.Close()
	}
	if r.work == "" {
		return
	}
	if keep {
		r.logf("logs and data kept in %s", r.work)
		return
	}
	_ = os.RemoveAll(r.work)
}

// stopAll stops every process: the services side by side, then the
// nats-servers. One after another, in the reverse of their start order,
// their shutdowns added up to 16 s of every TestChaosSmall (a dispatcher
// alone took 5 s). Nothing of the run is read after this.
func (r *runner) stopAll() {
	isNATS := func(name string) bool { return filepath.Base(r.procs[name].path) == "nats-server" }
	for _, nats := range []bool{false, true} {
		var wg sync.WaitGroup
		for _, name := range r.order {
			if isNATS(name) != nats {
				continue
			}
			p := r.procs[name]
			wg.Go(func() {
				p.stop(stopDeadline)
				_ = p.log.(*lockedWriter).Close()
			})
		}
		wg.Wait()
	}
}

func (r *runner) startPostgres(ctx context.Context) error {
	pgDir := filepath.Join(r.work, "pg")
	if err := os.MkdirAll(pgDir, 0o755); err != nil {
		return err
	}
	pgLog, err := os.Create(filepath.Join(r.logs, "postgres.log"))
	if err != nil {
		return err
	}
	r.pgLog = pgLog
	r.pgOpts = pgserver.Options{DataDir: filepath.Join(pgDir, "data"), NoSync: r.o.PGNoSync,
		Logf: func(f string, a ...any) { fmt.Fprintf(pgLog, f+"\n", a...) }}
	pg, err := pgserver.Start(ctx, r.pgOpts)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	r.pg = pg
	r.pgOpts.Port = pg.Port()
	return nil
}

func (r *runner) openLog(name string) (*lockedWriter, error) {
	f, err := os.Create(filepath.Join(r.logs, name+".log"))
	if err != nil {
		return nil, err
	}
	return &lockedWriter{w: f}, nil
}

// startSim starts the fake Daraja, never killed (it is the outside world),
// and scripts its faults.
func (r *runner) startSim(ctx context.Context, bin string) error {
	var err error
	if r.simLog, err = r.openLog("daraja-sim"); err != nil {
		return err
	}
	r.simURL, r.controlURL, r.stopSim, err = binaries.StartSim(ctx, filepath.Join(bin, "daraja-sim"), r.o.SimDelay, r.simLog,
		"-answer-latency", r.o.Latency.String())
	if err != nil {
		return err
	}
	scripts := faultScripts(r.o.N, r.o.Faults)
	if err := postScripts(ctx, r.controlURL, scripts); err != nil {
		return err
	}
	kinds := map[string]int{}
	for _, sc := range scripts {
		kinds[sc.kind()]++
	}
	r.logf("Daraja faults scripted (%s): %v; push answers held up to %s", r.o.Faults, kinds, r.o.Latency)
	return nil
}

// replicas is NATS_STREAM_REPLICAS: one per nats-server.
func (r *runner) replicas() int {
	if r.o.Cluster {
		return clusterNodes
	}
	return 1
}

// env is every service's environment, sorted: the defaults below, then
// Options.ExtraEnv over them.
func (r *runner) env(apiPort, cbPort int) ([]string, error) {
	cbSecret, err := events.GenerateCallbackSecret()
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"PATH":                   os.Getenv("PATH"),
		"HOME":                   os.Getenv("HOME"),
		"LOG_FORMAT":             "json",
		"API_ADDR":               fmt.Sprintf("127.0.0.1:%d", apiPort),
		"API_TOKENS":             "chaos:" + chaosToken,
		"CALLBACK_ADDR":          fmt.Sprintf("127.0.0.1:%d", cbPort),
		"CALLBACK_BASE_URL":      r.cbBase,
		"CALLBACK_SECRET":        cbSecret,
		"DATABASE_URL":           r.pg.URL("postgres"),
		"NATS_URL":               r.natsURL,
		"NATS_STREAM_REPLICAS":   fmt.Sprint(r.replicas()),
		"DARAJA_BASE_URL":        r.simURL,
		"DARAJA_CONSUMER_KEY":    darajatest.DefaultConsumerKey,
		"DARAJA_CONSUMER_SECRET": darajatest.DefaultConsumerSecret,
		// Short reconciler timers so that a run settles in minutes. The
		// retry budget leaves room for Daraja's one-minute waits (quota,
		// "Unable to lock subscriber"); the request deadline must exceed
		// it plus the prompt's lifetime (3m by default): an ambiguous push
		// is waited on that long before it is failed.
		"DISPATCH_RETRY_MAX":         "90s",
		"RECONCILE_AFTER":            "5s",
		"RECONCILE_UNKNOWN_DEADLINE": "2m",
		"RECONCILE_REQUEST_DEADLINE": "5m",
		// The load is one client sending at -rate (25/s by default) on
		// purpose, over the api's per-client default of 20/s: not an abuse
		// test; nor is its backlog while Daraja stalls (a minute at 25/s
		// is over API_CLIENT_MAX_QUEUED's 1000). The phone and Daraja
		// limits keep their defaults.
		"API_RATE_LIMIT":        "0",
		"API_CLIENT_MAX_QUEUED": "0",
		// Several instances of a service run side by side: their
		// admin servers would all want the one default address.
		"API_METRICS_ADDR":        "off",
		"PROJECTOR_METRICS_ADDR":  "off",
		"DISPATCHER_METRICS_ADDR": "off",
		"CALLBACK_METRICS_ADDR":   "off",
	}
	for k, v := range r.o.ExtraEnv {
		env[k] = v
	}
	r.cbSecret = env["CALLBACK_SECRET"] // forgeries sign with the one the services use
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	return list, nil
}

// addProcs declares the supervised processes and their start order.
func (r *runner) addProcs(bin string, natsPort int, env []string) error {
	r.procs = map[string]*proc{}
	add := func(name, binary string, args []string, ready func(context.Context) error, extraEnv ...string) error {
		return r.addProc(bin, env, name, binary, args, ready, extraEnv...)
	}
	if err := add("nats-server", "nats-server", []string{"-js", "-a", "127.0.0.1", "-p", fmt.Sprint(natsPort),
		"-sd", filepath.Join(r.work, "nats"), "-n", "chaos"}, binaries.TCPReady(fmt.Sprintf("127.0.0.1:%d", natsPort))); err != nil {
		return err
	}
	if err := add("projector", "projector", nil, nil); err != nil {
		return err
	}
	if err := add("api", "api", nil, binaries.HTTPReady(r.apiURL+"/readyz")); err != nil {
		return err
	}
	r.dispatchers = dispatcherNames(r.o.Dispatchers)
	for _, name := range r.dispatchers {
		if err := add(name, "dispatcher", nil, nil); err != nil {
			return err
		}
	}
	// callback-ingest crashes on a share of the callbacks it has kept and
	// not yet published (restarted at once, as an orchestrator would).
	var crashEnv []string
	if r.o.CallbackCrash > 0 {
		crashEnv = append(crashEnv, fmt.Sprintf("%s=%s=%g", failpoint.Env, failpoint.CallbackAfterKeep, r.o.CallbackCrash))
	}
	return add("callback-ingest", "callback-ingest", nil, binaries.HTTPReady(r.cbBase+"/readyz"), crashEnv...)
}

// addProc declares the supervised process name, running binary of bin
// with env and extraEnv over it, and puts it last in the start order.
func (r *runner) addProc(bin string, env []string, name, binary string, args []string, ready func(context.Context) error, extraEnv ...string) error {
	if r.procs == nil {
		r.procs = map[string]*proc{}
	}
	w, err := r.openLog(name)
	if err != nil {
		return err
	}
	r.procs[name] = &proc{name: name, path: filepath.Join(bin, binary), args: args,
		env: append(slices.Clip(env), extraEnv...), log: w, ready: ready}
	r.order = append(r.order, name)
	return nil
}

// chaosToken is the load's API token; the api refuses tokens under 32 bytes.
const chaosToken = "chaos-token-long-enough-for-the-api-0001"
