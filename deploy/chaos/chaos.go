package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	_ "github.com/lib/pq" // the "postgres" driver
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/pgserver"
)

// Options of a run.
type Options struct {
	Root string // the repository (holds go.work)
	// Bin is a directory holding the binaries already built (Build); empty:
	// the run builds them into its work directory first.
	Bin      string
	N        int           // requests to post
	Clients  int           // concurrent clients
	Rate     float64       // requests per second, all clients together
	Kills    int           // kill -9s of each killed process
	PGStop   time.Duration // how long Postgres is stopped (once); 0: never
	Down     time.Duration // longest time a killed process stays down
	Settle   time.Duration // deadline for quiescence after the load
	Seed     uint64
	SimDelay time.Duration     // the fake's callback delay
	Replays  int               // delivered callbacks sent again to test idempotency
	Faults   string            // Daraja faults scripted: "full", "quick" (none that waits out a prompt's lifetime) or "none"
	Latency  time.Duration     // longest hold of a push's answer after Daraja processed it
	ExtraEnv map[string]string // passed to every service, over the defaults
	// Dispatchers is how many dispatcher instances run at once (each with
	// its reconciler); the first is the one killed.
	Dispatchers int
	// ConsumerDeletes: times the dispatcher's consumer is deleted through
	// the NATS API mid-run (the dispatcher creates it again).
	ConsumerDeletes int
	// CallbackCrash is the share of kept callbacks after which
	// callback-ingest crashes (failpoint.CallbackAfterKeep); 0: never.
	CallbackCrash float64
	// OAuthFaults is how many token requests fail after each kill of the
	// dispatcher (so that its next instance meets them), in turn empty-400,
	// html-403 and service-unavailable; 0: none.
	OAuthFaults int
	// Forgeries is how many forged failures are posted with a payment's
	// valid CallBackURL within CALLBACK_FAST_FAILURE of its push; a quarter
	// as many forged successes carry a receipt the fake paid another
	// payment with, and up to as many late 1032s follow payments stkgate
	// ended Unknown (forge.go); 0: none.
	Forgeries int
	// RequestReplays is how many payments' stk.requested is stored again
	// as stkgate-admin dlq replay does past the duplicate window, once
	// during the load: two thirds of them already final (the first with
	// its attempt record purged), the rest in flight (dlqreplay.go); 0:
	// none.
	RequestReplays int
	// PGNoSync runs Postgres with fsync off (pgserver.Options.NoSync): the
	// run stops Postgres, never the machine, and its initdb with fsyncs
	// took 10 s of TestChaosSmall's start on a loaded machine, 2 s
	// without.
	PGNoSync    bool
	Out         io.Writer // progress and the report
	KeepWorkDir bool
	// Cluster runs the cluster test (cluster.go) instead of chaos's plan:
	// three nats-servers, Instances instances of each service, and, with
	// ClusterFaults, the cluster's faults during the load. The plan's
	// faults above (Kills, PGStop, ConsumerDeletes, CallbackCrash,
	// OAuthFaults, Forgeries, RequestReplays) and Dispatchers are not
	// used.
	Cluster       bool
	Instances     int
	ClusterFaults bool
}

// killed are the processes the chaos loop kills, in a fixed order so that
// a seed reproduces a run.
var killed = []string{"api", "dispatcher", "callback-ingest", "projector", "nats-server"}

// Run does one run and reports its figures. The error is for a run that
// could not be carried out; a run that found losses returns a Report whose
// Failures are not empty.
//
// A run is five steps: set up the stack (setUp), post the load while the
// chaos plan is injected (loadAndInject), wait for every payment to settle
// (settle), then replay callbacks and judge what the fake Daraja and the
// read model say (report).
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	r := &runner{o: o, rng: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))}
	r.logf("seed %d, %d requests, %d clients at %.0f/s, %d kills of each of %s, Postgres stopped %s once",
		o.Seed, o.N, o.Clients, o.Rate, o.Kills, strings.Join(killed, ", "), o.PGStop)
	defer func() {
		failed := err != nil || (rep != nil && len(rep.Failures) > 0)
		r.tearDown(o.KeepWorkDir || failed)
	}()
	if o.Cluster {
		if err := r.setUpCluster(ctx); err != nil {
			return nil, err
		}
		answers, err := r.loadAndFaults(ctx)
		if err != nil {
			return nil, err
		}
		if err := r.settle(ctx, answers); err != nil {
			return nil, err
		}
		return r.report(ctx, answers)
	}
	if err := r.setUp(ctx); err != nil {
		return nil, err
	}
	stopForger := func() forgeryFigures { return forgeryFigures{} }
	if o.Forgeries > 0 {
		if stopForger, err = r.startForger(ctx); err != nil {
			return nil, err
		}
	}
	answers, err := r.loadAndInject(ctx)
	if err != nil {
		stopForger()
		return nil, err
	}
	err = r.settle(ctx, answers)
	r.forgeries = stopForger()
	if err != nil {
		return nil, err
	}
	return r.report(ctx, answers)
}

// runner is one run's stack and figures.
type runner struct {
	o     Options
	logMu sync.Mutex // logf's
	rng   *rand.Rand
	work  string // the run's directory: bin, logs, data
	logs  string

	pgMu   sync.Mutex // held while Postgres is stopped and started again
	pg     *pgserver.Server
	pgOpts pgserver.Options
	pgLog  *os.File
	db     *sql.DB

	natsURL, apiURL, cbBase string
	cbSecret                string // CALLBACK_SECRET, to sign forgeries
	simURL, controlURL      string
	simLog                  *lockedWriter
	stopSim                 func()

	procs       map[string]*proc
	order       []string // start order; stopped in reverse
	dispatchers []string
	// reported are the processes the report lists (kills survived); nil:
	// killed and the dispatchers beside the first.
	reported []string
	closers  []func() // closed at tearDown, after the processes stop

	// The cluster run's (cluster.go).
	natsNodes []string
	nc        *nats.Conn // the runner's connection to the cluster
	cluster   clusterFigures
	cpuAtLoad map[string]float64 // each process's CPU seconds as the load began

	// Figures of the chaos loop.
	loadTook, settleTook time.Duration
	pgStops              int
	consumerDeletes      int
	dispatcherKills      int
	oauthFaults          map[string]int
	forgeries            forgeryFigures
	requestReplays       requestReplayFigures
	chaosErrs            []string
}

// logf writes one line to Out; the forger's goroutines log beside the
// run's own.
func (r *runner) logf(format string, args ...any) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	fmt.Fprintf(r.o.Out, "chaos: "+format+"\n", args...)
}

// step is one entry of the chaos plan: what, when (from the load's start),
// and for a kill how long the process stays down.
type step struct {
	what     string // a process of killed, "postgres", planDeleteConsumer or planReplayRequests
	at, down time.Duration
}

// plan is the chaos plan: every kill and the Postgres stop, shuffled, at
// random moments of the load's expected length; and the requests stored
// again, at three quarters of it (some payments must be final by then).
func (r *runner) plan() []step {
	var whats []string
	for range r.o.Kills {
		whats = append(whats, killed...)
	}
	if r.o.PGStop > 0 {
		whats = append(whats, "postgres")
	}
	for range r.o.ConsumerDeletes {
		whats = append(whats, planDeleteConsumer)
	}
	r.rng.Shuffle(len(whats), func(i, j int) { whats[i], whats[j] = whats[j], whats[i] })
	loadLen := time.Duration(float64(r.o.N) / r.o.Rate * float64(time.Second))
	at := make([]time.Duration, len(whats))
	steps := make([]step, len(whats))
	for i := range whats {
		at[i] = loadLen/20 + time.Duration(r.rng.Int64N(int64(loadLen*17/20)+1))
		steps[i] = step{what: whats[i], down: time.Duration(r.rng.Int64N(int64(r.o.Down) + 1))}
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	for i := range steps {
		steps[i].at = at[i]
	}
	if r.o.RequestReplays > 0 {
		steps = append(steps, step{what: planReplayRequests, at: loadLen * 3 / 4})
		sort.SliceStable(steps, func(i, j int) bool { return steps[i].at < steps[j].at })
	}
	return steps
}

// loadAndInject posts the load while it carries out the chaos plan (a step
// whose moment has passed while the one before it ran comes at once), and
// returns the load's answers.
func (r *runner) loadAndInject(ctx context.Context) ([]answer, error) {
	steps := r.plan()
	start := time.Now()
	loadDone := make(chan struct{})
	var answers []answer
	go func() {
		defer close(loadDone)
		answers = load(ctx, r.o, r.apiURL, chaosToken, nil)
	}()
	r.oauthFaults = map[string]int{}
	for _, s := range steps {
		sleep(ctx, time.Until(start.Add(s.at)))
		if ctx.Err() != nil {
			break
		}
		if err := r.inject(ctx, s, time.Since(start).Round(time.Millisecond)); err != nil {
			return nil, err
		}
	}
	<-loadDone
	r.loadTook = time.Since(start)
	r.logf("load and chaos done in %s", r.loadTook.Round(time.Millisecond))
	return answers, nil
}

// inject carries out one step of the plan. A fault that could not be
// injected is counted in chaosErrs; the error is for a stack that cannot
// go on (Postgres not starting again).
func (r *runner) inject(ctx context.Context, s step, at time.Duration) error {
	switch s.what {
	case "postgres":
		r.logf("%s: stopping Postgres for %s", at, r.o.PGStop)
		r.pgMu.Lock()
		defer r.pgMu.Unlock()
		err := r.pg.Stop()
		if err == nil {
			sleep(ctx, r.o.PGStop)
			r.pg, err = pgserver.Start(ctx, r.pgOpts)
		}
		if err != nil {
			return fmt.Errorf("postgres stop/start: %w", err)
		}
		r.pgStops++
		return nil
	case planDeleteConsumer:
		r.logf("%s: deleting the consumer %q", at, events.ConsumerDispatcher)
		if err := deleteConsumer(ctx, r.natsURL, events.StreamName, events.ConsumerDispatcher); err != nil {
			r.chaosErrs = append(r.chaosErrs, err.Error())
			r.logf("delete consumer: %v", err)
			return nil
		}
		r.consumerDeletes++
		return nil
	case planReplayRequests:
		r.logf("%s: storing %d payments' requests again (dlq replay past the duplicate window)", at, r.o.RequestReplays)
		r.replayRequests(ctx)
		return nil
	}
	// OAuth faults are scripted while the dispatcher is down: its next
	// instance asks for a token first.
	var whileDown func()
	if s.what == "dispatcher" && r.o.OAuthFaults > 0 {
		kind := oauthFaultKinds[r.dispatcherKills%len(oauthFaultKinds)]
		r.dispatcherKills++
		whileDown = func() {
			if err := postOAuthFaults(ctx, r.controlURL, r.o.OAuthFaults, kind); err != nil {
				r.chaosErrs = append(r.chaosErrs, err.Error())
				r.logf("OAuth faults: %v", err)
				return
			}
			r.oauthFaults[kind] += r.o.OAuthFaults
		}
	}
	r.logf("%s: kill -9 %s, down %s", at, s.what, s.down.Round(time.Millisecond))
	if err := r.procs[s.what].kill9(ctx, s.down, whileDown); err != nil {
		r.chaosErrs = append(r.chaosErrs, err.Error())
		r.logf("%s did not come back: %v", s.what, err)
	}
	return nil
}

// settle waits for quiescence: every accepted id final, and every record
// (also of a request whose answer was lost), or Options.Settle.
func (r *runner) settle(ctx context.Context, answers []answer) error {
	accepted := map[string]bool{}
	for _, a := range answers {
		if a.trackingID != "" {
			accepted[a.trackingID] = true
		}
	}
	start := time.Now()
	deadline := start.Add(r.o.Settle)
	for {
		rows, err := readRows(ctx, r.db)
		if err == nil {
			final, open := 0, 0
			for id := range accepted {
				if row, ok := rows[id]; ok && row.status == 1 {
					final++
				}
			}
			for _, row := range rows {
				if row.status != 1 {
					open++
				}
			}
			// Every record final, and no kept callback left for the
			// applier or held for the reconciler's query: a callback
			// held with nothing to query becomes a late result only
			// after its payment ended (up to a minute after: the
			// reconciler's backoff), and the checks read it.
			if final == len(accepted) && open == 0 && callbacksSettled(ctx, r.natsURL) {
				r.settleTook = time.Since(start)
				return nil
			}
			if time.Now().After(deadline) {
				r.logf("settle deadline: %d of %d accepted are final; %d records are not", final, len(accepted), open)
				r.settleTook = time.Since(start)
				return nil
			}
		} else if time.Now().After(deadline) {
			return fmt.Errorf("read Postgres: %w", err)
		}
		sleep(ctx, time.Second)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// report replays delivered callbacks and judges the run by what the fake
// Daraja recorded and what the read model holds.
func (r *runner) report(ctx context.Context, answers []answer) (*Report, error) {
	// Give a late (double) push or callback a moment to show itself.
	sleep(ctx, r.o.SimDelay+2*time.Second)
	rec, err := recordings(ctx, r.controlURL)
	if err != nil {
		return nil, err
	}
	rows, err := readRows(ctx, r.db)
	if err != nil {
		return nil, err
	}
	replayed, changed, err := replayCallbacks(ctx, r.db, rec, rows, r.o.Replays, r.rng)
	if err != nil {
		return nil, err
	}

	disputed, err := disputedHolders(r.logs, r.dispatchers)
	if err != nil {
		return nil, err
	}
	rep := analyse(r.o, answers, rows, rec, disputed, r.forgeries.LateTo)
	rep.Forgeries = r.forgeries
	rep.RequestReplays = r.requestReplays
	rep.RequestReplayChanged = requestReplayChanges(r.requestReplays.Before, rows)
	rep.Seed = r.o.Seed
	rep.LoadTook, rep.SettleTook = r.loadTook, r.settleTook
	rep.Replayed, rep.ReplayChanged = replayed, changed
	rep.PGStops = r.pgStops
	rep.ConsumerDeletes, rep.ConsumerDeletesAsked = r.consumerDeletes, r.o.ConsumerDeletes
	rep.OAuthFaults = r.oauthFaults
	rep.ChaosErrors = r.chaosErrs
	reported := r.reported
	if reported == nil {
		reported = append(slices.Clone(killed), r.dispatchers[1:]...)
	}
	for _, name := range reported {
		p := r.procs[name]
		p.mu.Lock()
		rep.Procs = append(rep.Procs, procFigures{Name: name, Kills: p.kills, Survived: p.survived,
			SelfExits: p.selfExits, FailpointExits: p.failpointExits})
		p.mu.Unlock()
		rep.Procs[len(rep.Procs)-1].Running = p.running()
	}
	rep.judge()
	if r.o.Cluster {
		r.readCPU(ctx)
		r.cluster.Nodes, r.cluster.Instances = len(r.natsNodes), r.o.Instances
		r.measureCluster(answers, rows, rec)
		rep.Cluster = &r.cluster
		rep.judgeCluster()
	}
	return rep, nil
}

// row is a record of the read model.
type row struct {
	status       int
	responseCode string
	source       string
	receipt      string
	lateCode     string // meta.late_result's response_code; "" for none
	updatedAt    time.Time
}

func readRows(ctx context.Context, db *sql.DB) (map[string]row, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rs, err := db.QueryContext(ctx, `SELECT tracking_id::text, status, coalesce(response_code, ''),
		coalesce(source, ''), coalesce(transaction_code, ''), coalesce(late_result->>'response_code', ''), updated_at
		FROM stk_pushes`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[string]row{}
	for rs.Next() {
		var id string
		var r row
		if err := rs.Scan(&id, &r.status, &r.responseCode, &r.source, &r.receipt, &r.lateCode, &r.updatedAt); err != nil {
			return nil, err
		}
		out[id] = r
	}
	return out, rs.Err()
}

// dispatcherNames are the supervised names of n dispatcher instances: the
// first, "dispatcher", is the one the chaos loop kills.
func dispatcherNames(n int) []string {
	names := []string{"dispatcher"}
	for i := 2; i <= n; i++ {
		names = append(names, fmt.Sprintf("dispatcher-%d", i))
	}
	return names
}

// planDeleteConsumer is the chaos plan's entry for deleting the
// dispatcher's consumer.
const planDeleteConsumer = "delete-consumer"

// deleteConsumer deletes a durable consumer through the NATS API, as an
// operator's mistake would, retrying while nats-server is down (a kill may
// have just hit it) or the consumer is not there yet (a dispatcher
// creates it again after an earlier delete), for up to 30 s.
func deleteConsumer(ctx context.Context, natsURL, stream, consumer string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		if last = deleteConsumerOnce(ctx, natsURL, stream, consumer); last == nil {
			return nil
		}
		sleep(ctx, 500*time.Millisecond)
	}
	return fmt.Errorf("delete consumer %s of %s: %w", consumer, stream, last)
}

// callbacksSettled reports whether callback-ingest's applier and the
// reconciler's confirm consumer have nothing pending on STK_CALLBACKS (a
// message naked with a delay counts as pending its ack). An error is false:
// the settle loop asks again.
func callbacksSettled(ctx context.Context, natsURL string) bool {
	nc, err := nats.Connect(natsURL, nats.Name("stkgate-chaos"), nats.Timeout(2*time.Second))
	if err != nil {
		return false
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return false
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, name := range []string{events.ConsumerCallbackApply, events.ConsumerReconcilerConfirm} {
		c, err := js.Consumer(ictx, events.CallbackStreamName, name)
		if err != nil {
			return false
		}
		info, err := c.Info(ictx)
		if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
			return false
		}
	}
	return true
}

func deleteConsumerOnce(ctx context.Context, natsURL, stream, consumer string) error {
	nc, err := nats.Connect(natsURL, nats.Name("stkgate-chaos"), nats.Timeout(2*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return js.DeleteConsumer(dctx, stream, consumer)
}
