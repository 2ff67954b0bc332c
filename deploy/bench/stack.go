package main

// What a run starts: the binaries, an embedded JetStream, a private
// Postgres, the fake Daraja, the bare baseline, and the services, each a
// process of its own.

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/lib/pq"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/deploy/binaries"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/ports"
	"github.com/stkgate/stkgate/events/kit/service"
	"github.com/stkgate/stkgate/events/testkit/natsserver"
	"github.com/stkgate/stkgate/events/testkit/pgserver"
)

// The API clients of the load: one per phase, so that a phase's rows are
// found through the client's index.
const (
	clientAccept  = "bench"
	clientE2E     = "e2e"
	clientLatency = "latency"
	tokenSuffix   = "-token-long-enough-for-the-api-0001"
)

func tokenOf(client string) string { return client + tokenSuffix }

// stack is a run's engines and services.
type stack struct {
	o        Options
	work     string
	bin      string // the binaries, built before
	ns       *server.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	pg       *pgserver.Server
	db       *sql.DB
	dbURL    string // the services' database
	secret   string
	simURL   string
	control  string
	stopSim  func()
	env      []string
	addr     map[string]string // service → its http://host:port
	metrics  map[string]string // service → its admin server's host:port
	procs    map[string]*binaries.Process
	logFiles []*os.File
}

func (s *stack) logf(format string, args ...any) {
	fmt.Fprintf(s.o.Out, "bench: "+format+"\n", args...)
}

func (s *stack) up(ctx context.Context) error {
	var err error
	if s.work, err = os.MkdirTemp("", "stkgate-bench-"); err != nil {
		return err
	}
	// Postgres runs as user postgres when we are root.
	if err := os.Chmod(s.work, 0o755); err != nil {
		return err
	}
	pgLog, err := s.openLog("postgres")
	if err != nil {
		return err
	}
	if s.pg, err = pgserver.Start(ctx, pgserver.Options{DataDir: filepath.Join(s.work, "pg"), NoSync: s.o.PGNoSync,
		Logf: func(f string, a ...any) { fmt.Fprintf(pgLog, f+"\n", a...) }}); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	simLog, err := s.openLog("daraja-sim")
	if err != nil {
		return err
	}
	if s.simURL, s.control, s.stopSim, err = binaries.StartSim(ctx, filepath.Join(s.bin, "daraja-sim"), s.o.SimDelay, simLog); err != nil {
		return err
	}
	return s.fresh(ctx, "postgres")
}

// again makes s a fresh stack on the same Postgres server and fake Daraja:
// its services stopped, a new JetStream (another server, another store) and
// a new database (dbName), new ports and a new callback secret. Nothing of
// the stack before is left for the new services: no backlog in JetStream,
// no row in the read model. The fake has had no push (the paths before
// run no dispatcher). A second Postgres cluster, as there was, cost
// another initdb and start (2 s of the smoke run with fsync off, 10 s
// with it on a loaded machine) and the fake's stop and start another 1 s.
func (s *stack) again(ctx context.Context, dbName string) error {
	s.stop(slices.Collect(maps.Keys(s.procs))...)
	if _, err := s.db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(dbName)); err != nil {
		return fmt.Errorf("database %s: %w", dbName, err)
	}
	_ = s.db.Close()
	s.nc.Close()
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	return s.fresh(ctx, dbName)
}

// fresh starts a JetStream (its store under the run's directory, named
// after dbName), opens database dbName, and picks ports and a callback
// secret for the services.
func (s *stack) fresh(ctx context.Context, dbName string) error {
	var err error
	if s.ns, err = natsserver.Start(natsserver.Options{Port: -1, StoreDir: filepath.Join(s.work, "nats-"+dbName)}); err != nil {
		return err
	}
	if s.nc, err = nats.Connect(s.ns.ClientURL()); err != nil {
		return err
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		return err
	}
	s.dbURL = s.pg.URL(dbName)
	if s.db, err = sql.Open("postgres", s.dbURL); err != nil {
		return err
	}
	if s.secret, err = events.GenerateCallbackSecret(); err != nil {
		return err
	}
	s.addr, s.procs = map[string]string{}, map[string]*binaries.Process{}
	for _, name := range []string{"api", "callback-ingest", "bench-baseline"} {
		if s.addr[name], err = ports.FreeAddr(); err != nil {
			return err
		}
	}
	// Each service's admin server on a port of its own, not the defaults
	// (9101…), which another run on the machine may hold; the end-to-end
	// run reads the Go heap there.
	s.metrics = map[string]string{}
	for _, name := range services {
		if s.metrics[name], err = ports.FreeAddr(); err != nil {
			return err
		}
	}
	s.env = s.environment()
	s.logf("stack up in %s: nats %s, postgres %d (database %s), daraja-sim %s (callback after %s)",
		s.work, s.ns.ClientURL(), s.pg.Port(), dbName, s.simURL, s.o.SimDelay)
	return nil
}

// environment is every service's, sorted.
func (s *stack) environment() []string {
	env := map[string]string{
		"PATH":                   os.Getenv("PATH"),
		"HOME":                   os.Getenv("HOME"),
		"LOG_FORMAT":             "json",
		"API_ADDR":               s.addr["api"],
		"API_TOKENS":             fmt.Sprintf("%s:%s,%s:%s,%s:%s", clientAccept, tokenOf(clientAccept), clientE2E, tokenOf(clientE2E), clientLatency, tokenOf(clientLatency)),
		"API_RATE_LIMIT":         "0",
		"API_CLIENT_MAX_QUEUED":  "0",
		"PHONE_MAX_PROMPTS":      "0",
		"CALLBACK_ADDR":          s.addr["callback-ingest"],
		"CALLBACK_BASE_URL":      "http://" + s.addr["callback-ingest"],
		"CALLBACK_SECRET":        s.secret,
		"CALLBACK_ALLOW_CIDRS":   "127.0.0.1/32",
		"DATABASE_URL":           s.dbURL,
		"NATS_URL":               s.ns.ClientURL(),
		"NATS_STREAM_REPLICAS":   "1",
		"DARAJA_BASE_URL":        s.simURL,
		"DARAJA_CONSUMER_KEY":    darajatest.DefaultConsumerKey,
		"DARAJA_CONSUMER_SECRET": darajatest.DefaultConsumerSecret,
		"DARAJA_MAX_RPS":         "0",
		// Pushes in flight: each waits on JetStream and Daraja for some
		// milliseconds, so the defaults (32, 16 per client) bound one
		// client to a few hundred payments/s, below the rate offered.
		"DISPATCH_CONCURRENCY":          "1024",
		"DISPATCH_CLIENT_MAX_IN_FLIGHT": "1024",
		"BASELINE_ADDR":                 s.addr["bench-baseline"],
	}
	for name, setting := range metricsSetting {
		env[setting] = s.metrics[name]
	}
	if s.o.ProfileDir != "" {
		env[service.ProfileEnv] = s.o.ProfileDir
	}
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	return list
}

// metricsSetting names each service's admin address setting (CONFIG.md).
var metricsSetting = map[string]string{
	"api":             "API_METRICS_ADDR",
	"projector":       "PROJECTOR_METRICS_ADDR",
	"dispatcher":      "DISPATCHER_METRICS_ADDR",
	"callback-ingest": "CALLBACK_METRICS_ADDR",
}

func (s *stack) openLog(name string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Join(s.work, "logs"), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.work, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil {
		s.logFiles = append(s.logFiles, f)
	}
	return f, err
}

// start starts the named services (binaries of the same names) and waits
// until each is ready.
func (s *stack) start(ctx context.Context, names ...string) error {
	for _, name := range names {
		log, err := s.openLog(name)
		if err != nil {
			return err
		}
		p, err := binaries.Start(name, filepath.Join(s.bin, name), s.env, log)
		if err != nil {
			return err
		}
		s.procs[name] = p
		if err := s.waitReady(ctx, name); err != nil {
			return fmt.Errorf("%w (see %s)", err, log.Name())
		}
	}
	return nil
}

func (s *stack) waitReady(ctx context.Context, name string) error {
	p := s.procs[name]
	var ready func(context.Context) error
	a, ok := s.addr[name]
	if !ok {
		// The projector and the dispatcher serve no API: their admin
		// servers say when their checks (NATS, Postgres) hold.
		a, ok = s.metrics[name]
	}
	if ok {
		ready = binaries.HTTPReady("http://" + a + "/readyz")
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		if ready == nil {
			// No HTTP port: ready once it has run a moment; a failed
			// start exits at once.
			select {
			case <-p.Exited():
				return fmt.Errorf("%s exited at start", name)
			case <-time.After(time.Second):
				return nil
			}
		}
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited at start", name)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop stops the named services, side by side: a service's shutdown takes
// seconds (the dispatcher's 4 to 5 s, the api's 1 to 4 s), and one after
// another they were 13 s of every smoke run.
func (s *stack) stop(names ...string) {
	var wg sync.WaitGroup
	for _, name := range names {
		if p := s.procs[name]; p != nil {
			wg.Go(func() { p.Stop(10 * time.Second) })
			delete(s.procs, name)
		}
	}
	wg.Wait()
}

func (s *stack) down() {
	s.stop(slices.Collect(maps.Keys(s.procs))...)
	if s.stopSim != nil {
		s.stopSim()
	}
	if s.db != nil {
		_ = s.db.Close()
	}
	if s.pg != nil {
		_ = s.pg.Stop()
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	}
	for _, f := range s.logFiles {
		_ = f.Close()
	}
	if s.work != "" && !s.o.Keep {
		_ = os.RemoveAll(s.work)
	}
}
