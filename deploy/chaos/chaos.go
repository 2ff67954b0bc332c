package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/lib/pq" // the "postgres" driver
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store/pgserver"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/failpoint"
)

// Options of a run.
type Options struct {
	Root     string        // the repository (holds go.work)
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
	Out         io.Writer // progress and the report
	KeepWorkDir bool
}

// killed are the processes the chaos loop kills, in a fixed order so that
// a seed reproduces a run.
var killed = []string{"api", "dispatcher", "callback-ingest", "projector", "nats-server"}

// answer is what one request got: the last answer of its attempts.
type answer struct {
	phone      string
	keyed      bool // sent with an Idempotency-Key, retried
	attempts   int
	status     int    // 0: no HTTP answer
	message    string // of a non-2xx JSON answer
	trackingID string // of a 2xx
	err        string
	getStatus  int // status of the GET right after a 2xx; 0: none
}

// Run does one run and reports its figures. The error is for a run that
// could not be carried out; a run that found losses returns a Report whose
// Failures are not empty.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Out, "chaos: "+format+"\n", args...)
	}
	logf("seed %d, %d requests, %d clients at %.0f/s, %d kills of each of %s, Postgres stopped %s once",
		o.Seed, o.N, o.Clients, o.Rate, o.Kills, strings.Join(killed, ", "), o.PGStop)

	// Postgres runs as user postgres when we are root: the directory must
	// be one it can enter, which t.TempDir is not.
	work, err := os.MkdirTemp("", "stkgate-chaos-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if o.KeepWorkDir || err != nil || (rep != nil && len(rep.Failures) > 0) {
			logf("logs and data kept in %s", work)
			return
		}
		_ = os.RemoveAll(work)
	}()
	logs := filepath.Join(work, "logs")
	bin := filepath.Join(work, "bin")
	for _, d := range []string{logs, bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}

	if err := build(ctx, o.Root, bin, logf); err != nil {
		return nil, err
	}

	// Postgres.
	pgDir := filepath.Join(work, "pg")
	if err := os.MkdirAll(pgDir, 0o755); err != nil {
		return nil, err
	}
	pgLog, err := os.Create(filepath.Join(logs, "postgres.log"))
	if err != nil {
		return nil, err
	}
	defer pgLog.Close()
	pgOpts := pgserver.Options{DataDir: filepath.Join(pgDir, "data"),
		Logf: func(f string, a ...any) { fmt.Fprintf(pgLog, f+"\n", a...) }}
	pg, err := pgserver.Start(ctx, pgOpts)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	var pgMu sync.Mutex
	defer func() {
		pgMu.Lock()
		_ = pg.Stop()
		pgMu.Unlock()
	}()
	pgOpts.Port = pg.Port()
	dbURL := pg.URL("postgres")

	// Ports, fixed for the run so that restarts come back where clients
	// and Daraja look for them.
	var natsPort, apiPort, cbPort int
	for _, p := range []*int{&natsPort, &apiPort, &cbPort} {
		if *p, err = freePort(); err != nil {
			return nil, err
		}
	}
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	apiURL := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	cbBase := fmt.Sprintf("http://127.0.0.1:%d", cbPort)

	openLog := func(name string) (*lockedWriter, error) {
		f, err := os.Create(filepath.Join(logs, name+".log"))
		if err != nil {
			return nil, err
		}
		return &lockedWriter{w: f}, nil
	}

	// The fake Daraja: never killed, it is the outside world.
	simLog, err := openLog("daraja-sim")
	if err != nil {
		return nil, err
	}
	defer simLog.Close()
	simURL, controlURL, stopSim, err := startSim(ctx, filepath.Join(bin, "daraja-sim"), o.SimDelay, simLog, "-answer-latency", o.Latency.String())
	if err != nil {
		return nil, err
	}
	defer stopSim()
	scripts := faultScripts(o.N, o.Faults)
	if err := postScripts(ctx, controlURL, scripts); err != nil {
		return nil, err
	}
	kinds := map[string]int{}
	for _, sc := range scripts {
		kinds[sc.kind()]++
	}
	logf("Daraja faults scripted (%s): %v; push answers held up to %s", o.Faults, kinds, o.Latency)

	const token = "chaos-token-long-enough-for-the-api-0001" // the api refuses tokens under 32 bytes
	cbSecret, err := events.GenerateCallbackSecret()
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"PATH":                   os.Getenv("PATH"),
		"HOME":                   os.Getenv("HOME"),
		"LOG_FORMAT":             "json",
		"API_ADDR":               fmt.Sprintf("127.0.0.1:%d", apiPort),
		"API_TOKENS":             "chaos:" + token,
		"CALLBACK_ADDR":          fmt.Sprintf("127.0.0.1:%d", cbPort),
		"CALLBACK_BASE_URL":      cbBase,
		"CALLBACK_SECRET":        cbSecret,
		"DATABASE_URL":           dbURL,
		"NATS_URL":               natsURL,
		"NATS_STREAM_REPLICAS":   "1",
		"DARAJA_BASE_URL":        simURL,
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
	}
	for k, v := range o.ExtraEnv {
		env[k] = v
	}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	sort.Strings(envList)

	procs := map[string]*proc{}
	// add supervises name, an instance of binary.
	add := func(name, binary string, args []string, ready func(context.Context) error, extraEnv ...string) error {
		w, err := openLog(name)
		if err != nil {
			return err
		}
		procs[name] = &proc{name: name, path: filepath.Join(bin, binary), args: args,
			env: append(slices.Clip(envList), extraEnv...), log: w, ready: ready}
		return nil
	}
	if err := add("nats-server", "nats-server", []string{"-js", "-a", "127.0.0.1", "-p", fmt.Sprint(natsPort),
		"-sd", filepath.Join(work, "nats"), "-n", "chaos"}, tcpReady(fmt.Sprintf("127.0.0.1:%d", natsPort))); err != nil {
		return nil, err
	}
	if err := add("api", "api", nil, httpReady(apiURL+"/readyz")); err != nil {
		return nil, err
	}
	if err := add("projector", "projector", nil, nil); err != nil {
		return nil, err
	}
	order := []string{"nats-server", "projector", "api"}
	dispatchers := dispatcherNames(o.Dispatchers)
	for _, name := range dispatchers {
		if err := add(name, "dispatcher", nil, nil); err != nil {
			return nil, err
		}
	}
	order = append(order, dispatchers...)
	// callback-ingest crashes on a share of the callbacks it has kept and
	// not yet published (restarted at once, as an orchestrator would).
	var crashEnv []string
	if o.CallbackCrash > 0 {
		crashEnv = append(crashEnv, fmt.Sprintf("%s=%s=%g", failpoint.Env, failpoint.CallbackAfterKeep, o.CallbackCrash))
	}
	if err := add("callback-ingest", "callback-ingest", nil, httpReady(cbBase+"/readyz"), crashEnv...); err != nil {
		return nil, err
	}
	order = append(order, "callback-ingest")
	defer func() {
		for i := len(order) - 1; i >= 0; i-- {
			procs[order[i]].stop(10 * time.Second)
			_ = procs[order[i]].log.(*lockedWriter).Close()
		}
	}()
	for _, name := range order {
		p := procs[name]
		if err := p.start(); err != nil {
			return nil, err
		}
		if err := p.waitReady(ctx); err != nil {
			return nil, fmt.Errorf("first start: %w (see %s)", err, filepath.Join(logs, name+".log"))
		}
	}
	logf("stack up: api %s, callbacks %s, nats %s, daraja-sim %s, logs in %s", apiURL, cbBase, natsURL, simURL, logs)

	db, err := sql.Open("postgres", dbURL)
	if err != nil {
		return nil, err
	}
	defer db.Close()

	// The chaos plan: every kill and the Postgres stop, shuffled, at
	// random moments of the load's expected length (an event whose moment
	// has passed while the one before it ran comes at once).
	var plan []string
	for range o.Kills {
		plan = append(plan, killed...)
	}
	if o.PGStop > 0 {
		plan = append(plan, "postgres")
	}
	for range o.ConsumerDeletes {
		plan = append(plan, planDeleteConsumer)
	}
	rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	loadLen := time.Duration(float64(o.N) / o.Rate * float64(time.Second))
	at := make([]time.Duration, len(plan))
	downs := make([]time.Duration, len(plan))
	for i := range plan {
		at[i] = loadLen/20 + time.Duration(rng.Int64N(int64(loadLen*17/20)+1))
		downs[i] = time.Duration(rng.Int64N(int64(o.Down) + 1))
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })

	start := time.Now()
	loadDone := make(chan struct{})
	var answers []answer
	go func() {
		defer close(loadDone)
		answers = load(ctx, o, apiURL, token)
	}()

	var pgStops, consumerDeletes, dispatcherKills int
	oauthFaults := map[string]int{}
	var chaosErrs []string
	for i, what := range plan {
		sleep(ctx, time.Until(start.Add(at[i])))
		if ctx.Err() != nil {
			break
		}
		at := time.Since(start).Round(time.Millisecond)
		if what == "postgres" {
			logf("%s: stopping Postgres for %s", at, o.PGStop)
			pgMu.Lock()
			err := pg.Stop()
			if err == nil {
				sleep(ctx, o.PGStop)
				pg, err = pgserver.Start(ctx, pgOpts)
			}
			pgMu.Unlock()
			if err != nil {
				return nil, fmt.Errorf("postgres stop/start: %w", err)
			}
			pgStops++
			continue
		}
		if what == planDeleteConsumer {
			logf("%s: deleting the consumer %q", at, events.ConsumerDispatcher)
			if err := deleteConsumer(ctx, natsURL, events.StreamName, events.ConsumerDispatcher); err != nil {
				chaosErrs = append(chaosErrs, err.Error())
				logf("delete consumer: %v", err)
				continue
			}
			consumerDeletes++
			continue
		}
		// OAuth faults are scripted while the dispatcher is down: its next
		// instance asks for a token first.
		var whileDown func()
		if what == "dispatcher" && o.OAuthFaults > 0 {
			kind := oauthFaultKinds[dispatcherKills%len(oauthFaultKinds)]
			dispatcherKills++
			whileDown = func() {
				if err := postOAuthFaults(ctx, controlURL, o.OAuthFaults, kind); err != nil {
					chaosErrs = append(chaosErrs, err.Error())
					logf("OAuth faults: %v", err)
					return
				}
				oauthFaults[kind] += o.OAuthFaults
			}
		}
		logf("%s: kill -9 %s, down %s", at, what, downs[i].Round(time.Millisecond))
		if err := procs[what].kill9(ctx, downs[i], whileDown); err != nil {
			chaosErrs = append(chaosErrs, err.Error())
			logf("%s did not come back: %v", what, err)
		}
	}
	<-loadDone
	loadTook := time.Since(start)
	logf("load and chaos done in %s", loadTook.Round(time.Millisecond))

	accepted := map[string]answer{}
	for _, a := range answers {
		if a.trackingID != "" {
			accepted[a.trackingID] = a
		}
	}

	// Quiescence: every accepted id final, and every record (also of a
	// request whose answer was lost), or the deadline.
	deadline := time.Now().Add(o.Settle)
	var rows map[string]row
	for {
		rows, err = readRows(ctx, db)
		if err == nil {
			n := 0
			for id := range accepted {
				if r, ok := rows[id]; ok && r.status == 1 {
					n++
				}
			}
			open := 0
			for _, r := range rows {
				if r.status != 1 {
					open++
				}
			}
			if n == len(accepted) && open == 0 {
				break
			}
			if time.Now().After(deadline) {
				logf("settle deadline: %d of %d accepted are final; %d records are not", n, len(accepted), open)
				break
			}
		} else if time.Now().After(deadline) {
			return nil, fmt.Errorf("read Postgres: %w", err)
		}
		sleep(ctx, time.Second)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	settleTook := time.Since(start) - loadTook
	// Give a late (double) push or callback a moment to show itself.
	sleep(ctx, o.SimDelay+2*time.Second)

	rec, err := recordings(ctx, controlURL)
	if err != nil {
		return nil, err
	}
	if rows, err = readRows(ctx, db); err != nil {
		return nil, err
	}
	replayed, changed, err := replayCallbacks(ctx, db, rec, rows, o.Replays, rng)
	if err != nil {
		return nil, err
	}

	rep = analyse(o, answers, rows, rec)
	rep.Seed = o.Seed
	rep.LoadTook, rep.SettleTook = loadTook, settleTook
	rep.Replayed, rep.ReplayChanged = replayed, changed
	rep.PGStops = pgStops
	rep.ConsumerDeletes, rep.ConsumerDeletesAsked = consumerDeletes, o.ConsumerDeletes
	rep.OAuthFaults = oauthFaults
	rep.ChaosErrors = chaosErrs
	for _, name := range append(slices.Clone(killed), dispatchers[1:]...) {
		p := procs[name]
		p.mu.Lock()
		rep.Procs = append(rep.Procs, procFigures{Name: name, Kills: p.kills, Survived: p.survived,
			SelfExits: p.selfExits, FailpointExits: p.failpointExits})
		p.mu.Unlock()
		rep.Procs[len(rep.Procs)-1].Running = p.running()
	}
	rep.judge()
	return rep, nil
}

// build compiles every service, the fake and nats-server into bin. The
// nats-server is built from within the events module so that its pinned
// version is the one used.
// Naming outputs builds only those.
func build(ctx context.Context, root, bin string, logf func(string, ...any), only ...string) error {
	targets := []struct{ dir, pkg, out string }{
		{"api", "./cmd/api", "api"},
		{"api", "./cmd/projector", "projector"},
		{"dispatcher", "./cmd/dispatcher", "dispatcher"},
		{"callback-ingest", "./cmd/callback-ingest", "callback-ingest"},
		{"deploy", "./cmd/daraja-sim", "daraja-sim"},
		{"events", "github.com/nats-io/nats-server/v2", "nats-server"},
	}
	t0 := time.Now()
	built := 0
	for _, t := range targets {
		if len(only) > 0 && !slices.Contains(only, t.out) {
			continue
		}
		built++
		cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		cmd := exec.CommandContext(cctx, "go", "build", "-o", filepath.Join(bin, t.out), t.pkg)
		cmd.Dir = filepath.Join(root, t.dir)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("go build %s in %s: %w\n%s", t.pkg, t.dir, err, out)
		}
	}
	logf("built %d binaries in %s", built, time.Since(t0).Round(time.Millisecond))
	return nil
}

// startSim starts the fake Daraja and reads its address line.
func startSim(ctx context.Context, path string, delay time.Duration, log io.Writer, args ...string) (url, control string, stop func(), err error) {
	cmd := exec.Command(path, append([]string{"-callback-delay", delay.String()}, args...)...)
	cmd.Env = []string{"LOG_FORMAT=json"}
	cmd.Stderr = log
	cmd.SysProcAttr = sysProcAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", "", nil, fmt.Errorf("daraja-sim: %w", err)
	}
	stop = func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	line := make(chan string, 1)
	go func() {
		b := make([]byte, 512)
		n, _ := stdout.Read(b)
		line <- string(b[:n])
		_, _ = io.Copy(log, stdout)
	}()
	select {
	case l := <-line:
		for _, f := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(f, "url="); ok {
				url = v
			}
			if v, ok := strings.CutPrefix(f, "control="); ok {
				control = v
			}
		}
		if url == "" || control == "" {
			stop()
			return "", "", nil, fmt.Errorf("daraja-sim said %q", l)
		}
		return url, control, stop, nil
	case <-time.After(30 * time.Second):
		stop()
		return "", "", nil, errors.New("daraja-sim did not start in 30s")
	case <-ctx.Done():
		stop()
		return "", "", nil, ctx.Err()
	}
}

// phoneFor gives request i a phone of its own, except one in twenty
// (i%20 == 18), which shares its phone with the two others of its sixty:
// payments to one phone wait for each other, at the dispatcher and at
// Daraja ("Unable to lock subscriber" while a prompt is open). One in ten
// (none of the shared) ends in a suffix that makes the fake choose a
// failure outcome; the others pay.
func phoneFor(i int) string {
	if i%20 == 18 {
		return fmt.Sprintf("2547%04d7777", (i/60)%10000)
	}
	suffixes := []string{"1032", "0001", "1037", "1019", "2001"}
	last := fmt.Sprintf("%04d", 5000+i%1000)
	if i%10 == 9 {
		last = suffixes[(i/10)%len(suffixes)]
	}
	return fmt.Sprintf("2547%04d%s", i%10000, last)
}

// load posts o.N requests at o.Rate from o.Clients clients (see keyed for
// retries). After each 2xx it GETs the id once.
func load(ctx context.Context, o Options, apiURL, token string) []answer {
	answers := make([]answer, o.N)
	client := &http.Client{Timeout: 10 * time.Second}
	tick := time.NewTicker(time.Duration(float64(time.Second) / o.Rate))
	defer tick.Stop()
	var next atomic.Int64
	work := make(chan int)
	var wg sync.WaitGroup
	for range o.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				answers[i] = post(ctx, client, apiURL, token, i, o.Seed)
			}
		}()
	}
	for ctx.Err() == nil {
		i := int(next.Add(1) - 1)
		if i >= o.N {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
		select {
		case work <- i:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	return answers
}

// keyed says whether request i carries an Idempotency-Key; those are
// retried as a careful client would (no answer, 503, 409, 5xx), up to
// maxAttempts times. The others are sent once: a retry without a key is a
// second payment by contract, which is not what this run measures.
func keyed(i int) bool { return i%2 == 0 }

const maxAttempts = 5

func post(ctx context.Context, client *http.Client, apiURL, token string, i int, seed uint64) answer {
	a := answer{phone: phoneFor(i), keyed: keyed(i)}
	body, _ := json.Marshal(map[string]any{
		"phone": a.phone, "amount": 1 + i%500, "reference": fmt.Sprintf("CH%d", i), "tag": "chaos",
	})
	for attempt := 1; ; attempt++ {
		a.attempts = attempt
		try(ctx, client, apiURL, token, body, &a, seed, i)
		retry := a.status == 0 || a.status == http.StatusServiceUnavailable || a.status == http.StatusConflict || a.status >= 500
		if !a.keyed || !retry || attempt >= maxAttempts || ctx.Err() != nil {
			break
		}
		sleep(ctx, time.Duration(attempt)*300*time.Millisecond)
	}
	if a.trackingID == "" {
		return a
	}
	greq, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/api/stk-push/"+a.trackingID, nil)
	if err == nil {
		greq.Header.Set("X-API-Token", token)
		if gresp, err := client.Do(greq); err == nil {
			_, _ = io.Copy(io.Discard, gresp.Body)
			gresp.Body.Close()
			a.getStatus = gresp.StatusCode
		}
	}
	return a
}

// try sends one attempt and records its answer in a.
func try(ctx context.Context, client *http.Client, apiURL, token string, body []byte, a *answer, seed uint64, i int) {
	a.status, a.err, a.message, a.trackingID = 0, "", "", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/api/stk-push", bytes.NewReader(body))
	if err != nil {
		a.err = err.Error()
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Token", token)
	if a.keyed {
		req.Header.Set("Idempotency-Key", fmt.Sprintf("chaos-%d-%d", seed, i))
	}
	resp, err := client.Do(req)
	if err != nil {
		a.err = err.Error()
		return
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	a.status = resp.StatusCode
	var ok struct {
		Message    string `json:"message"`
		TrackingID string `json:"tracking_id"`
		Data       struct {
			TrackingID string `json:"tracking_id"`
		} `json:"data"`
	}
	_ = json.Unmarshal(b, &ok)
	a.message = ok.Message
	if resp.StatusCode/100 != 2 {
		return
	}
	a.trackingID = ok.TrackingID
	if a.trackingID == "" {
		a.trackingID = ok.Data.TrackingID
	}
	if a.trackingID == "" {
		a.err = "2xx without a tracking id: " + string(b)
	}
}

// row is a record of the read model.
type row struct {
	status       int
	responseCode string
	source       string
	receipt      string
	updatedAt    time.Time
}

func readRows(ctx context.Context, db *sql.DB) (map[string]row, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rs, err := db.QueryContext(ctx, `SELECT tracking_id::text, status, coalesce(response_code, ''),
		coalesce(source, ''), coalesce(transaction_code, ''), updated_at FROM stk_pushes`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[string]row{}
	for rs.Next() {
		var id string
		var r row
		if err := rs.Scan(&id, &r.status, &r.responseCode, &r.source, &r.receipt, &r.updatedAt); err != nil {
			return nil, err
		}
		out[id] = r
	}
	return out, rs.Err()
}

// simRecordings is the body of daraja-sim's GET /recordings.
type simRecordings struct {
	Pushes    []darajatest.Push             `json:"pushes"`
	Queries   []darajatest.Query            `json:"queries"`
	Callbacks []darajatest.CallbackDelivery `json:"callbacks"`
}

func recordings(ctx context.Context, controlURL string) (simRecordings, error) {
	var rec simRecordings
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, controlURL+"/recordings", nil)
	if err != nil {
		return rec, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return rec, fmt.Errorf("daraja-sim recordings: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
		return rec, fmt.Errorf("daraja-sim recordings: %w", err)
	}
	return rec, nil
}

// trackingIDOf is the tracking id a CallBackURL names (<id>/<token>).
func trackingIDOf(callbackURL string) string {
	i := strings.LastIndex(callbackURL, events.CallbackPath)
	if i < 0 {
		return ""
	}
	id, _, ok := events.ParseCallbackPath(callbackURL[i:])
	if !ok {
		return ""
	}
	return id
}

// replayCallbacks sends up to n delivered callbacks again, as a Daraja
// that repeats itself would, and counts the records that changed.
func replayCallbacks(ctx context.Context, db *sql.DB, rec simRecordings, rows map[string]row, n int, rng *rand.Rand) (replayed, changed int, err error) {
	var delivered []darajatest.CallbackDelivery
	for _, c := range rec.Callbacks {
		if c.StatusCode == http.StatusOK {
			delivered = append(delivered, c)
		}
	}
	rng.Shuffle(len(delivered), func(i, j int) { delivered[i], delivered[j] = delivered[j], delivered[i] })
	if len(delivered) > n {
		delivered = delivered[:n]
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, c := range delivered {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(c.Body))
		if err != nil {
			return replayed, 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return replayed, 0, fmt.Errorf("replay callback: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		replayed++
	}
	if replayed == 0 {
		return 0, 0, nil
	}
	// The projector applies what callback-ingest published within moments;
	// a change, if any, shows by then.
	sleep(ctx, 3*time.Second)
	after, err := readRows(ctx, db)
	if err != nil {
		return replayed, 0, err
	}
	for _, c := range delivered {
		id := trackingIDOf(c.URL)
		if before, ok := rows[id]; ok && before != after[id] {
			changed++
		}
	}
	return replayed, changed, nil
}

// script is daraja-sim's ScriptRequest.
type script struct {
	Phone      string   `json:"phone"`
	FailFirst  []string `json:"fail_first,omitempty"`
	NoCallback bool     `json:"no_callback,omitempty"`
}

func (s script) kind() string {
	if s.NoCallback {
		return "no-callback"
	}
	return strings.Join(s.FailFirst, "+")
}

// faultScripts makes some phones' first pushes fail, in the ways the
// dispatcher must retry (nothing reached the customer) and in the ways it
// must not (the push may have prompted the customer), answers some with
// pages that are not Daraja's (a proxy's HTML 404 or 403, a 401 without a
// body, an envelope whose text holds a NUL) or ("full" only) with a 503
// after Daraja processed the push (its retry then finds the subscriber
// locked), and loses some callbacks. "quick" leaves out the faults whose resolution
// waits out a prompt's lifetime (an ambiguous push whose callback a kill
// could lose). No shared phone (phoneFor) is scripted.
func faultScripts(n int, mode string) []script {
	if mode == "none" {
		return nil
	}
	var out []script
	for i := range n {
		var sc script
		switch i % 40 {
		case 1, 21:
			sc.FailFirst = []string{"service-unavailable"}
		case 3:
			sc.FailFirst = []string{"too-many-requests", "spike-arrest"}
		case 23:
			sc.FailFirst = []string{"quota"}
		case 5, 25:
			sc.FailFirst = []string{"locked"}
		case 7, 27:
			sc.NoCallback = true
		case 2:
			sc.FailFirst = []string{"html-404"}
		case 4:
			sc.FailFirst = []string{"html-403"}
		case 6:
			sc.FailFirst = []string{"unauthorized-empty"}
		case 8:
			sc.FailFirst = []string{"nul-message"}
		}
		if mode == "full" {
			switch i % 40 {
			case 11:
				sc.FailFirst = []string{"reset-after-accept"}
			case 13, 33:
				sc.FailFirst = []string{"internal-after-accept"}
			case 15:
				sc.FailFirst = []string{"timeout-after-accept"}
			case 17:
				sc.FailFirst = []string{"reset-after-read"}
			case 31:
				sc.FailFirst = []string{"internal-500.003.1001"}
			case 10, 30:
				// Ambiguous: the retry finds the subscriber locked while
				// the prompt is open, and must then wait for its callback.
				sc.FailFirst = []string{"service-unavailable-after-accept"}
			}
		}
		if sc.FailFirst != nil || sc.NoCallback {
			sc.Phone = phoneFor(i)
			out = append(out, sc)
		}
	}
	return out
}

func postScripts(ctx context.Context, controlURL string, scripts []script) error {
	if len(scripts) == 0 {
		return nil
	}
	return postControl(ctx, controlURL+"/scripts", scripts)
}

// postControl POSTs v as JSON to one of daraja-sim's control endpoints,
// which answers 204.
func postControl(ctx context.Context, url string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("daraja-sim %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("daraja-sim %s: %s: %s", url, resp.Status, b)
	}
	return nil
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

// oauthFaultKinds are the OAuth failures daraja-sim scripts (POST
// /oauth-faults): a 400 without a body (as after the consumer secret was
// rotated), a WAF's HTML 403, and the gateway's 503.
var oauthFaultKinds = []string{"empty-400", "html-403", "service-unavailable"}

// postOAuthFaults makes the fake's next count token requests fail with
// kind.
func postOAuthFaults(ctx context.Context, controlURL string, count int, kind string) error {
	return postControl(ctx, controlURL+"/oauth-faults", map[string]any{"count": count, "kind": kind})
}
