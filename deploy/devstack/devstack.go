// Package devstack runs the whole of stkgate in one process: an embedded
// JetStream server, a Postgres (the one in DATABASE_URL, else a local one,
// else one it starts), the Daraja simulator, and the api, projector,
// dispatcher (with its reconciler) and callback-ingest services, each through
// its own Run.
//
// Every setting of DESIGN.md can be given in the environment and overrides
// the dev default, so the same command runs against a real Postgres, NATS or
// Daraja.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"golang.org/x/sync/errgroup"

	"github.com/stkgate/stkgate/api"
	"github.com/stkgate/stkgate/api/projector"
	callback "github.com/stkgate/stkgate/callback-ingest"
	"github.com/stkgate/stkgate/dispatcher"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/dispatcher/reconciler"
	"github.com/stkgate/stkgate/dispatcher/webhooks"
	"github.com/stkgate/stkgate/events/testkit/natsserver"
	"github.com/stkgate/stkgate/events/testkit/pgserver"
)

// Dev defaults. The ports avoid a system NATS (4222) and Postgres (5432).
const (
	DefaultToken    = "dev-token"
	DefaultNATSPort = 14222
	DefaultPGPort   = 15432
	DefaultSimDelay = 3 * time.Second
)

// localPostgresAddr is where the dev stack looks for a running Postgres
// before it starts its own; a variable so that a test can point it at
// nothing.
var localPostgresAddr = "127.0.0.1:5432"

// embeddedPGNoSync runs the Postgres the dev stack starts itself with fsync
// off (pgserver.Options.NoSync); a variable so that a test, whose cluster is
// thrown away, can set it: initdb's fsyncs were 10 of its 16 s on a loaded
// machine. make run keeps them: its cluster is the developer's.
var embeddedPGNoSync bool

// Options of the dev stack itself (not of the services).
type Options struct {
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// DataDir holds the embedded servers' files (DEV_DATA_DIR, default ./.data).
	DataDir string
	// Out receives the start-up banner; nil means os.Stdout.
	Out    io.Writer
	Logger *slog.Logger
	// Ready, if set, is called with the effective environment once the API
	// answers its readiness check.
	Ready func(env map[string]string)
	// Metrics serves each service's metrics at its default admin address
	// (make run); without it, only where the environment sets an address.
	Metrics bool
	// TraceExporter, when set, receives every service's spans (each
	// service still has its own provider and service.name): the tests'
	// in-memory exporter. Without it, tracing is as OTEL_* sets it.
	TraceExporter sdktrace.SpanExporter
	// UncertainRetryWindow, when set, replaces the dispatcher's (not an
	// environment setting; dispatcher.Config): how long after a push
	// answered 503 it may push again. For tests only, whose fake Daraja
	// never processes that 503: safe only while a prompt the 503'd push
	// may have opened stays open that long (docs/DARAJA.md).
	UncertainRetryWindow time.Duration
}

// Run starts everything and blocks until ctx is cancelled or a part fails.
// Its steps: the embedded parts the environment does not name (startNATS,
// startPostgres, startDaraja, setCallback), the services' configurations
// (configs), then the services and the banner (runAll).
func Run(ctx context.Context, o Options) error {
	d, out := newDevSetup(o)
	// Before anything starts: the dev-token must not reach a real Daraja.
	apiTokens, err := devTokens(d.lookup("API_TOKENS"), d.getenv("DARAJA_BASE_URL"))
	if err != nil {
		return err
	}
	defer d.stop()

	if err := d.startNATS(); err != nil {
		return err
	}
	if err := d.startPostgres(ctx); err != nil {
		return err
	}
	if err := d.startDaraja(); err != nil {
		return err
	}
	if err := d.setCallback(); err != nil {
		return err
	}
	if err := d.setWebhookKey(); err != nil {
		return err
	}
	cfgs, err := d.configs(apiTokens)
	if err != nil {
		return err
	}
	m, err := d.openMetrics()
	if err != nil {
		return err
	}
	defer m.close()
	cfgs.api.Metrics, cfgs.projector.Metrics, cfgs.callback.Metrics = m.api, m.projector, m.callback
	cfgs.dispatcher.Metrics, cfgs.reconciler.Metrics = m.dispatcher, m.dispatcher
	cfgs.exportTraces(o.TraceExporter)
	if o.UncertainRetryWindow > 0 {
		cfgs.dispatcher.UncertainRetryWindow = o.UncertainRetryWindow
	}
	return d.runAll(ctx, cfgs, out, o.Ready, m)
}

// devSetup is what Run builds the stack from.
type devSetup struct {
	getenv  func(string) string
	log     *slog.Logger
	dataDir string
	// env holds the dev defaults; the real environment overrides each one
	// (lookup).
	env map[string]string
	// stops stop the embedded parts, in the reverse order (stop).
	stops []func()
}

// newDevSetup fills in o's defaults; out receives the banner.
func newDevSetup(o Options) (d *devSetup, out io.Writer) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	out = o.Out
	if out == nil {
		out = os.Stdout
	}
	dataDir := o.DataDir
	if dataDir == "" {
		dataDir = getenv("DEV_DATA_DIR")
	}
	if dataDir == "" {
		dataDir = ".data"
	}
	d = &devSetup{getenv: getenv, log: log, dataDir: dataDir, env: devDefaults()}
	if o.Metrics {
		d.setMetricsDefaults()
	}
	return d, out
}

// lookup is the environment's k, or else the dev stack's.
func (d *devSetup) lookup(k string) string {
	if v := d.getenv(k); v != "" {
		return v
	}
	return d.env[k]
}

// stop stops the embedded parts, the last started first.
func (d *devSetup) stop() {
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i]()
	}
}

// startNATS starts an embedded JetStream unless NATS_URL names one.
func (d *devSetup) startNATS() error {
	if d.lookup("NATS_URL") != "" {
		return nil
	}
	port, err := intSetting(d.getenv, "DEV_NATS_PORT", DefaultNATSPort)
	if err != nil {
		return err
	}
	ns, err := natsserver.Start(natsserver.Options{Port: port, StoreDir: filepath.Join(d.dataDir, "nats")})
	if err != nil {
		return fmt.Errorf("embedded NATS on port %d: %w", port, err)
	}
	d.stops = append(d.stops, func() { ns.Shutdown(); ns.WaitForShutdown() })
	d.env["NATS_URL"] = ns.ClientURL()
	d.log.Info("embedded JetStream started", "url", ns.ClientURL(), "store", filepath.Join(d.dataDir, "nats"))
	return nil
}

// startPostgres finds or starts a Postgres (devDatabase) unless
// DATABASE_URL names one.
func (d *devSetup) startPostgres(ctx context.Context) error {
	if d.lookup("DATABASE_URL") != "" {
		return nil
	}
	url, stop, err := devDatabase(ctx, d.getenv, d.dataDir, d.log)
	if err != nil {
		return err
	}
	if stop != nil {
		d.stops = append(d.stops, stop)
	}
	d.env["DATABASE_URL"] = url
	return nil
}

// startDaraja starts the Daraja simulator unless DARAJA_BASE_URL names a
// Daraja.
func (d *devSetup) startDaraja() error {
	if d.lookup("DARAJA_BASE_URL") != "" {
		return nil
	}
	delay := DefaultSimDelay
	if v := d.getenv("DARAJA_SIM_DELAY"); v != "" {
		dur, err := time.ParseDuration(v)
		if err != nil || dur < 0 {
			return fmt.Errorf("DARAJA_SIM_DELAY: %q is not a duration like 3s", v)
		}
		delay = dur
	}
	simDelay := delay
	if simDelay == 0 {
		simDelay = -1 // the simulator reads zero as its default and a negative delay as "at once"
	}
	sim, err := darajatest.NewServer(darajatest.Options{CallbackDelay: simDelay, Logger: d.log.With("component", "daraja-sim")})
	if err != nil {
		return fmt.Errorf("daraja simulator: %w", err)
	}
	d.stops = append(d.stops, func() { _ = sim.Close() })
	d.env["DARAJA_BASE_URL"] = sim.URL()
	d.env["DARAJA_CONSUMER_KEY"] = darajatest.DefaultConsumerKey
	d.env["DARAJA_CONSUMER_SECRET"] = darajatest.DefaultConsumerSecret
	d.log.Info("Daraja simulator started", "url", sim.URL(), "callback_delay", delay)
	return nil
}

// setCallback sets CALLBACK_BASE_URL and CALLBACK_SECRET where the
// environment does not.
func (d *devSetup) setCallback() error {
	if d.lookup("CALLBACK_BASE_URL") == "" {
		d.env["CALLBACK_BASE_URL"] = "http://" + loopback(d.lookup("CALLBACK_ADDR"))
	}
	if d.lookup("CALLBACK_SECRET") == "" {
		secret, err := devCallbackSecret(d.dataDir)
		if err != nil {
			return err
		}
		d.env["CALLBACK_SECRET"] = secret
	}
	return nil
}

// serviceConfigs are the configurations of the stack's services.
type serviceConfigs struct {
	api        api.Config
	projector  projector.Config
	dispatcher dispatcher.Config
	reconciler reconciler.Config
	callback   callback.Config
	webhooks   webhooks.Config
}

// configs reads each service's configuration from the environment and
// logs it, as each binary does at start.
func (d *devSetup) configs(apiTokens []api.ClientToken) (serviceConfigs, error) {
	var c serviceConfigs
	// The api's own reading of API_TOKENS would refuse dev-token (short):
	// devTokens read them instead.
	apiCfg, err := api.ConfigFromEnv(func(k string) string {
		if k == "API_TOKENS" {
			return ""
		}
		return d.lookup(k)
	})
	if err != nil {
		return c, fmt.Errorf("api: %w", err)
	}
	apiCfg.Tokens = apiTokens
	projCfg, err := projector.ConfigFromEnv(d.lookup)
	if err != nil {
		return c, fmt.Errorf("projector: %w", err)
	}
	dispCfg, err := dispatcher.ConfigFromEnv(d.lookup)
	if err != nil {
		return c, fmt.Errorf("dispatcher: %w", err)
	}
	recCfg, err := reconciler.ConfigFromEnv(d.lookup)
	if err != nil {
		return c, fmt.Errorf("reconciler: %w", err)
	}
	cbCfg, err := callback.ConfigFromEnv(d.lookup)
	if err != nil {
		return c, fmt.Errorf("callback-ingest: %w", err)
	}
	whCfg, err := webhooks.ConfigFromEnv(d.lookup)
	if err != nil {
		return c, fmt.Errorf("webhooks: %w", err)
	}
	log := d.log
	apiCfg.Logger = log.With("service", "api")
	projCfg.Logger = log.With("service", "projector")
	dispCfg.Logger = log.With("service", "dispatcher")
	recCfg.Logger = log.With("service", "dispatcher", "component", "reconciler")
	cbCfg.Logger = log.With("service", "callback-ingest")
	whCfg.Logger = log.With("service", "webhooks")
	// Each service's configuration, as its own binary logs it at start:
	// every setting, the secrets masked by its LogValue.
	apiCfg.Logger.Info("starting", "config", apiCfg)
	projCfg.Logger.Info("starting", "config", projCfg)
	dispCfg.Logger.Info("starting", "config", dispCfg)
	recCfg.Logger.Info("starting", "config", recCfg)
	cbCfg.Logger.Info("starting", "config", cbCfg)
	whCfg.Logger.Info("starting", "config", whCfg)
	return serviceConfigs{api: apiCfg, projector: projCfg, dispatcher: dispCfg, reconciler: recCfg, callback: cbCfg, webhooks: whCfg}, nil
}

// runAll runs the services until ctx is cancelled or one fails, and prints
// the banner to out (and calls ready) once the api answers.
func (d *devSetup) runAll(ctx context.Context, c serviceConfigs, out io.Writer, ready func(env map[string]string), m *stackMetrics) error {
	g, gctx := errgroup.WithContext(ctx)
	m.serve(gctx, g, d)
	g.Go(func() error { return named("api", api.Run(gctx, c.api)) })
	g.Go(func() error { return named("projector", projector.Run(gctx, c.projector)) })
	g.Go(func() error { return named("dispatcher", dispatcher.Run(gctx, c.dispatcher)) })
	g.Go(func() error { return named("reconciler", reconciler.Run(gctx, c.reconciler)) })
	g.Go(func() error { return named("callback-ingest", callback.Run(gctx, c.callback)) })
	g.Go(func() error { return named("webhooks", webhooks.Run(gctx, c.webhooks)) })

	effective := map[string]string{}
	for _, k := range []string{"API_ADDR", "CALLBACK_ADDR", "API_TOKENS", "NATS_URL", "DATABASE_URL", "DARAJA_BASE_URL", "CALLBACK_BASE_URL"} {
		effective[k] = d.lookup(k)
	}
	g.Go(func() error {
		// The banner promises a working curl line: print it once the API
		// answers, not merely once it was started.
		if !waitReady(gctx, "http://"+loopback(effective["API_ADDR"])+"/readyz") {
			return nil
		}
		printBanner(out, effective, d.getenv("DARAJA_BASE_URL") == "")
		m.printMetrics(out)
		if ready != nil {
			ready(effective)
		}
		return nil
	})
	return g.Wait()
}

// waitReady polls url until it answers 200 or ctx ends.
func waitReady(ctx context.Context, url string) bool {
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

func named(service string, err error) error {
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", service, err)
	}
	return nil
}

// devDatabase finds a Postgres for the dev stack: the local one on 5432 if it
// answers (in a database of its own, stkgate), else one started from the
// machine's Postgres binaries with its data under dataDir.
func devDatabase(ctx context.Context, getenv func(string) string, dataDir string, log *slog.Logger) (url string, stop func(), err error) {
	if url, err := localDatabase(ctx, "stkgate"); err == nil {
		log.Info("using the local Postgres", "addr", localPostgresAddr, "database", "stkgate")
		return url, nil, nil
	} else {
		log.Info("no usable local Postgres; starting an embedded one", "reason", err)
	}
	port, err := intSetting(getenv, "DEV_PG_PORT", DefaultPGPort)
	if err != nil {
		return "", nil, err
	}
	dir, err := filepath.Abs(filepath.Join(dataDir, "postgres"))
	if err != nil {
		return "", nil, err
	}
	srv, err := pgserver.Start(ctx, pgserver.Options{DataDir: dir, Port: port, NoSync: embeddedPGNoSync})
	if err != nil {
		return "", nil, fmt.Errorf("embedded Postgres: %w (set DATABASE_URL to use another)", err)
	}
	log.Info("embedded Postgres started", "port", port, "data", dir)
	return srv.URL("postgres"), func() { _ = srv.Stop() }, nil
}
