package main

// The cluster run (issue 13, make cluster-test): three nats-servers
// clustered on loopback, every stream and bucket three replicas, and
// Options.Instances instances of each service behind a balancer, loaded
// while the faults a cluster must ride out are injected one after the
// other: the STK stream leader's node stopped and started again, the next
// leader's killed -9 and started again, kill -9 of one instance of each
// service, stream and consumer leadership moved
// by stepdown, and a rolling restart (SIGTERM each instance in turn, which
// must drain and exit 0 within the stop deadline). The money guarantees
// are chaos's (report.go); what the cluster adds is judged and printed
// from clusterFigures.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stkgate/stkgate/deploy/binaries"
	"github.com/stkgate/stkgate/events"
)

const (
	clusterNodes = 3
	// stopDeadline is how long an instance may take to exit after SIGTERM:
	// docker compose's default stop_grace_period (deploy/container runs
	// the services without another), after which it is killed.
	stopDeadline = 10 * time.Second
	// hungAfter is when a SIGTERMed instance is killed and called hung.
	hungAfter = 60 * time.Second
	// faultGap is the steady load between two faults, so that each
	// fault's recovery is measured on its own.
	faultGap = 3 * time.Second
	// recoveryWindow bounds the search for a fault's recovery.
	recoveryWindow = 60 * time.Second
)

// clusterServices are the services run Options.Instances times each, in
// start order.
var clusterServices = []string{"projector", "api", "dispatcher", "callback-ingest"}

func instanceName(service string, i int) string { return fmt.Sprintf("%s-%d", service, i) }

// setUpCluster starts Postgres, the fake Daraja, the three nats-servers,
// and Options.Instances instances of each service, the api's and
// callback-ingest's behind a balancer each.
func (r *runner) setUpCluster(ctx context.Context) error {
	if err := r.prepare(ctx); err != nil {
		return err
	}
	secret := func() string {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	auth := binaries.NATSAuth{User: "stkgate", Password: secret(), RouteUser: "route", RoutePassword: secret()}
	var nodes []binaries.NATSNode
	for i := 1; i <= clusterNodes; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		cport, err := freePort()
		if err != nil {
			return err
		}
		nodes = append(nodes, binaries.NATSNode{Name: instanceName("nats", i), Port: port, ClusterPort: cport,
			StoreDir: filepath.Join(r.work, "nats", instanceName("nats", i))})
	}
	confs, err := binaries.WriteNATSConfigs(r.work, "stkgate-cluster", nodes, auth)
	if err != nil {
		return err
	}
	r.natsURL = binaries.NATSURL(nodes, auth)

	var apiAddrs, cbAddrs []string
	for range r.o.Instances {
		for _, addrs := range []*[]string{&apiAddrs, &cbAddrs} {
			port, err := freePort()
			if err != nil {
				return err
			}
			*addrs = append(*addrs, fmt.Sprintf("127.0.0.1:%d", port))
		}
	}
	for _, b := range []struct {
		addrs []string
		url   *string
	}{{apiAddrs, &r.apiURL}, {cbAddrs, &r.cbBase}} {
		lb, err := binaries.Balance(b.addrs...)
		if err != nil {
			return err
		}
		r.closers = append(r.closers, func() { _ = lb.Close() })
		*b.url = lb.URL()
	}
	if err := r.startSim(ctx, r.o.Bin); err != nil {
		return err
	}
	// env's API_ADDR and CALLBACK_ADDR are each instance's own, set below.
	env, err := r.env(0, 0)
	if err != nil {
		return err
	}
	for i, n := range nodes {
		if err := r.addProc(r.o.Bin, env, n.Name, "nats-server", []string{"-c", confs[i]},
			binaries.TCPReady(fmt.Sprintf("127.0.0.1:%d", n.Port))); err != nil {
			return err
		}
		r.natsNodes = append(r.natsNodes, n.Name)
	}
	for _, svc := range clusterServices {
		for i := 1; i <= r.o.Instances; i++ {
			name := instanceName(svc, i)
			var ready func(context.Context) error
			var extra []string
			switch svc {
			case "api":
				ready = binaries.HTTPReady("http://" + apiAddrs[i-1] + "/readyz")
				extra = append(extra, "API_ADDR="+apiAddrs[i-1])
			case "callback-ingest":
				ready = binaries.HTTPReady("http://" + cbAddrs[i-1] + "/readyz")
				extra = append(extra, "CALLBACK_ADDR="+cbAddrs[i-1])
			case "dispatcher":
				r.dispatchers = append(r.dispatchers, name)
			}
			if err := r.addProc(r.o.Bin, env, name, svc, nil, ready, extra...); err != nil {
				return err
			}
		}
	}
	r.reported = slices.Clone(r.order)

	// The nodes start together (each waits for its routes), then the
	// services once the cluster has a JetStream meta leader.
	for _, n := range r.natsNodes {
		if err := r.procs[n].start(); err != nil {
			return err
		}
	}
	for _, n := range r.natsNodes {
		if err := r.procs[n].waitReady(ctx); err != nil {
			return err
		}
	}
	nc, err := r.natsConn()
	if err != nil {
		return err
	}
	r.nc = nc
	if err := waitFor(ctx, time.Minute, func() error { return binaries.JetStreamReady(ctx, nc) }); err != nil {
		return fmt.Errorf("the cluster has no JetStream meta leader: %w", err)
	}
	for _, name := range r.order[clusterNodes:] {
		if err := r.startReady(ctx, name); err != nil {
			return err
		}
	}
	c, err := binaries.StreamCluster(ctx, nc, events.StreamName)
	if err != nil {
		return err
	}
	if len(c.Replicas)+1 != clusterNodes {
		return fmt.Errorf("stream %s has %d replicas beside its leader, want %d: NATS_STREAM_REPLICAS not applied", events.StreamName, len(c.Replicas), clusterNodes-1)
	}
	r.logf("cluster up: %d nats-servers (%s leads %s), %d instances of each of %v; api %s, callbacks %s, logs in %s",
		clusterNodes, c.Leader, events.StreamName, r.o.Instances, clusterServices, r.apiURL, r.cbBase, r.logs)
	r.db, err = sql.Open("postgres", r.pg.URL("postgres"))
	return err
}

// natsConn connects the runner to the cluster (any node).
func (r *runner) natsConn() (*nats.Conn, error) {
	return nats.Connect(r.natsURL, nats.Name("stkgate-cluster-test"), nats.Timeout(2*time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond))
}

// waitFor calls try until it succeeds or limit has passed.
func waitFor(ctx context.Context, limit time.Duration, try func() error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		if last = try(); last == nil {
			return nil
		}
		sleep(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return fmt.Errorf("%w (after %s)", last, limit)
		}
	}
}

// fault is one fault of the cluster run, as carried out.
type fault struct {
	What       string
	Start, End time.Time // injected; over (the process back and ready)
	Notes      []string
	// For a SIGTERM: the exit's time and code, and whether it hung.
	Exit     time.Duration
	ExitCode int
	Hung     bool
	Term     bool
	// Measured after the run from the load's answers and Daraja's pushes
	// (recover): the first 2xx to a request sent after Start, the first
	// prompt of a payment requested after Start, and the longest time
	// without any 2xx from Start to End+faultGap.
	AcceptAfter, PushAfter, Stall time.Duration
}

func (f *fault) notef(format string, args ...any) {
	f.Notes = append(f.Notes, fmt.Sprintf(format, args...))
}

// clusterFigures is what a cluster run adds to the report.
type clusterFigures struct {
	Nodes, Instances int
	Faults           []fault
	// Throughput and latency over the whole load: accepted per second of
	// load; final per second from the first request to the last record
	// final; request to visible (POST sent to the record final in
	// Postgres, its updated_at).
	AcceptedPerSec, FinalPerSec float64
	VisibleP50, VisibleP99      time.Duration
	// The stages of request to visible, p50 and p99 each: request sent to
	// its prompt at Daraja (the api, the stream, the dispatcher), prompt to
	// its callback sent (Daraja's delay), callback sent to the record final
	// (callback-ingest, the stream, the projector, Postgres). The one that grows under load is the one backing up.
	ToPush, ToCallback, ToVisible [2]time.Duration
	// CPU is the CPU time each process's current instance used (Postgres
	// with its backends), read at the end; Leader leads STK then.
	CPU    []procCPU
	Leader string
}

type procCPU struct {
	Name    string
	Seconds float64
}

// cpuNow is every process's CPU time so far (Postgres with its backends):
// what bounds the throughput on a machine whose cores are all busy.
func (r *runner) cpuNow() map[string]float64 {
	out := map[string]float64{}
	for _, name := range r.order {
		p := r.procs[name]
		p.mu.Lock()
		cmd := p.cmd
		p.mu.Unlock()
		if cmd == nil || !p.running() {
			continue
		}
		if u, err := binaries.UsageOf(cmd.Process.Pid); err == nil {
			out[name] = u.CPU
		}
	}
	if pid, err := postmasterPid(r.pg.DataDir()); err == nil {
		out["postgres"] = treeCPU(pid)
	}
	return out
}

// readCPU records each process's CPU time since the load began (since its
// start, for an instance started again meanwhile), and who leads STK now.
func (r *runner) readCPU(ctx context.Context) {
	now := r.cpuNow()
	for _, name := range append(slices.Clone(r.order), "postgres") {
		t, ok := now[name]
		if !ok {
			continue
		}
		if before := r.cpuAtLoad[name]; before <= t {
			t -= before
		}
		r.cluster.CPU = append(r.cluster.CPU, procCPU{name, t})
	}
	if c, err := binaries.StreamCluster(ctx, r.nc, events.StreamName); err == nil {
		r.cluster.Leader = c.Leader
	}
}

// postmasterPid is the pid postmaster.pid's first line holds.
func postmasterPid(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// treeCPU is the CPU time of pid and of its children (Postgres's backends
// and workers), from /proc.
func treeCPU(pid int) float64 {
	u, err := binaries.UsageOf(pid)
	if err != nil {
		return 0
	}
	total := u.CPU
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return total
	}
	for _, f := range strings.Fields(string(kids)) {
		if k, err := strconv.Atoi(f); err == nil {
			if ku, err := binaries.UsageOf(k); err == nil {
				total += ku.CPU
			}
		}
	}
	return total
}

// loadAndFaults posts the load (Options.N requests, and on until the last
// fault is over and faultGap has passed) while it injects the cluster's
// faults one after the other.
func (r *runner) loadAndFaults(ctx context.Context) ([]answer, error) {
	var faultsDone atomic.Bool
	if !r.o.ClusterFaults {
		faultsDone.Store(true)
	}
	r.cpuAtLoad = r.cpuNow()
	start := time.Now()
	loadDone := make(chan struct{})
	var answers []answer
	go func() {
		defer close(loadDone)
		answers = load(ctx, r.o, r.apiURL, chaosToken, func() bool { return !faultsDone.Load() })
	}()
	if r.o.ClusterFaults {
		sleep(ctx, 2*faultGap) // steady load first
		r.injectClusterFaults(ctx)
		sleep(ctx, faultGap)
		faultsDone.Store(true)
	}
	<-loadDone
	r.loadTook = time.Since(start)
	r.logf("load and faults done in %s", r.loadTook.Round(time.Millisecond))
	return answers, nil
}

// injectClusterFaults carries out (a) to (d) in turn, faultGap apart.
func (r *runner) injectClusterFaults(ctx context.Context) {
	step := func(what string, do func(f *fault) error) {
		if ctx.Err() != nil {
			return
		}
		f := fault{What: what, Start: time.Now()}
		r.logf("fault: %s", what)
		if err := do(&f); err != nil {
			r.chaosErrs = append(r.chaosErrs, fmt.Sprintf("%s: %v", what, err))
			f.notef("error: %v", err)
			r.logf("fault %s: %v", what, err)
		}
		f.End = time.Now()
		r.cluster.Faults = append(r.cluster.Faults, f)
		sleep(ctx, faultGap)
	}
	// (a) The STK stream leader's node stopped (SIGTERM: it hands its
	// leaderships over as it shuts down), and started again; then the new
	// leader's node killed -9 (the others must elect one), and started
	// again.
	for _, kill := range []bool{false, true} {
		what := "stop the " + events.StreamName + " leader's node"
		if kill {
			what = "kill -9 the " + events.StreamName + " leader's node"
		}
		step(what, func(f *fault) error { return r.leaderDown(ctx, f, kill) })
	}
	// (b) kill -9 one instance of each service, restarted after a second.
	for _, svc := range clusterServices {
		name := instanceName(svc, 1)
		step("kill -9 "+name, func(f *fault) error { return r.procs[name].kill9(ctx, time.Second, nil) })
	}
	// (c) Leadership moved: the stream's, then the dispatcher's consumer's.
	for _, consumer := range []string{"", events.ConsumerDispatcher} {
		what := "stepdown of the " + events.StreamName + " stream leader"
		info := func() (binaries.ClusterInfo, error) { return binaries.StreamCluster(ctx, r.nc, events.StreamName) }
		if consumer != "" {
			what = "stepdown of the " + consumer + " consumer leader"
			info = func() (binaries.ClusterInfo, error) {
				return binaries.ConsumerCluster(ctx, r.nc, events.StreamName, consumer)
			}
		}
		step(what, func(f *fault) error {
			before, err := info()
			if err != nil {
				return err
			}
			if err := binaries.StepDown(ctx, r.nc, events.StreamName, consumer); err != nil {
				return err
			}
			t0 := time.Now()
			var now binaries.ClusterInfo
			err = waitFor(ctx, 30*time.Second, func() error {
				var err error
				if now, err = info(); err != nil {
					return err
				}
				if now.Leader == "" || now.Leader == before.Leader {
					return fmt.Errorf("leader still %q", now.Leader)
				}
				return nil
			})
			f.notef("leader %s -> %s in %s", before.Leader, now.Leader, time.Since(t0).Round(time.Millisecond))
			return err
		})
	}
	// (d) Rolling restart: every instance SIGTERMed in turn, started
	// again once it has exited, and ready before the next.
	for _, svc := range clusterServices {
		for i := 1; i <= r.o.Instances; i++ {
			name := instanceName(svc, i)
			step("SIGTERM "+name, func(f *fault) error {
				f.Term = true
				var err error
				f.Exit, f.ExitCode, f.Hung, err = r.procs[name].term(ctx, hungAfter, 500*time.Millisecond, nil)
				return err
			})
		}
	}
}

// leaderDown stops the STK leader's node (kill: kill -9, else SIGTERM),
// notes how long until another node leads, starts it again after 3 s, and
// waits until every replica is current again.
func (r *runner) leaderDown(ctx context.Context, f *fault, kill bool) error {
	c, err := binaries.StreamCluster(ctx, r.nc, events.StreamName)
	if err != nil {
		return err
	}
	p, ok := r.procs[c.Leader]
	if !ok {
		return fmt.Errorf("leader %q is no node of the cluster", c.Leader)
	}
	f.notef("leader was %s", c.Leader)
	// While it is down: how long until another node leads.
	elected := func() {
		t0 := time.Now()
		var now binaries.ClusterInfo
		err := waitFor(ctx, 30*time.Second, func() error {
			var err error
			if now, err = binaries.StreamCluster(ctx, r.nc, events.StreamName); err != nil {
				return err
			}
			if now.Leader == "" || now.Leader == c.Leader {
				return fmt.Errorf("leader %q", now.Leader)
			}
			return nil
		})
		if err != nil {
			f.notef("no new leader while %s was down: %v", c.Leader, err)
			return
		}
		f.notef("%s leads %s after the exit", now.Leader, time.Since(t0).Round(time.Millisecond))
	}
	if kill {
		if err := p.kill9(ctx, 3*time.Second, elected); err != nil {
			return err
		}
	} else {
		took, code, _, err := p.term(ctx, hungAfter, 3*time.Second, elected)
		f.notef("%s exited %d in %s, down 3s", c.Leader, code, took.Round(time.Millisecond))
		if err != nil {
			return err
		}
	}
	// Back in the cluster: every replica current again.
	t0 := time.Now()
	err = waitFor(ctx, time.Minute, func() error {
		c, err := binaries.StreamCluster(ctx, r.nc, events.StreamName)
		if err != nil {
			return err
		}
		for _, rp := range c.Replicas {
			if !rp.Current || rp.Offline {
				return fmt.Errorf("replica %s not current", rp.Name)
			}
		}
		return nil
	})
	f.notef("replicas current %s after the restart", time.Since(t0).Round(time.Millisecond))
	return err
}

// measureCluster reads each fault's recovery, and the load's throughput
// and latency, from the answers, the fake's pushes, and the read model.
func (r *runner) measureCluster(answers []answer, rows map[string]row, rec simRecordings) {
	c := &r.cluster
	var accepts []time.Time // 2xx answers, by time
	requestedAt := map[string]time.Time{}
	var first, lastFinal time.Time
	var visible []time.Duration
	for _, a := range answers {
		if a.sentAt.IsZero() {
			continue
		}
		if first.IsZero() || a.sentAt.Before(first) {
			first = a.sentAt
		}
		if a.trackingID == "" {
			continue
		}
		accepts = append(accepts, a.doneAt)
		requestedAt[a.trackingID] = a.sentAt
		if row, ok := rows[a.trackingID]; ok && row.status == events.StatusFinal {
			visible = append(visible, row.updatedAt.Sub(a.sentAt))
			if row.updatedAt.After(lastFinal) {
				lastFinal = row.updatedAt
			}
		}
	}
	sort.Slice(accepts, func(i, j int) bool { return accepts[i].Before(accepts[j]) })
	for i := range c.Faults {
		f := &c.Faults[i]
		f.AcceptAfter, f.PushAfter = -1, -1
		failed := map[int]int{} // answers other than 2xx to requests sent during the fault, by status (0: none)
		for _, a := range answers {
			if !a.sentAt.IsZero() && !a.sentAt.Before(f.Start) && !a.sentAt.After(f.End) && a.trackingID == "" {
				failed[a.status]++
			}
			if a.trackingID != "" && !a.sentAt.Before(f.Start) && a.doneAt.Sub(f.Start) < recoveryWindow {
				if d := a.doneAt.Sub(f.Start); f.AcceptAfter < 0 || d < f.AcceptAfter {
					f.AcceptAfter = d
				}
			}
		}
		for _, p := range rec.Pushes {
			at, ok := requestedAt[trackingIDOf(p.Body.CallBackURL)]
			if p.Accepted && ok && !at.Before(f.Start) && p.At.Sub(f.Start) < recoveryWindow {
				if d := p.At.Sub(f.Start); f.PushAfter < 0 || d < f.PushAfter {
					f.PushAfter = d
				}
			}
		}
		if len(failed) > 0 {
			f.notef("not accepted (by status, 0: no answer): %v", failed)
		}
		prev, end := f.Start, f.End.Add(faultGap)
		for _, t := range accepts {
			if t.Before(f.Start) {
				continue
			}
			if t.After(end) {
				break
			}
			f.Stall = max(f.Stall, t.Sub(prev))
			prev = t
		}
		f.Stall = max(f.Stall, end.Sub(prev))
	}
	if r.loadTook > 0 {
		c.AcceptedPerSec = float64(len(accepts)) / r.loadTook.Seconds()
	}
	if lastFinal.After(first) {
		c.FinalPerSec = float64(len(visible)) / lastFinal.Sub(first).Seconds()
	}
	c.VisibleP50, c.VisibleP99 = quantiles(visible)[0], quantiles(visible)[1]
	var toPush, toCallback, toVisible []time.Duration
	pushedAt := map[string]time.Time{}
	for _, p := range rec.Pushes {
		id := trackingIDOf(p.Body.CallBackURL)
		if sent, ok := requestedAt[id]; ok && p.Accepted {
			if _, seen := pushedAt[id]; !seen {
				pushedAt[id] = p.At
				toPush = append(toPush, p.At.Sub(sent))
			}
		}
	}
	for _, cb := range rec.Callbacks {
		id := trackingIDOf(cb.URL)
		at, ok := pushedAt[id]
		if !ok || cb.StatusCode != http.StatusOK {
			continue
		}
		toCallback = append(toCallback, cb.At.Sub(at))
		if row, ok := rows[id]; ok && row.status == events.StatusFinal && row.source == "callback" {
			toVisible = append(toVisible, row.updatedAt.Sub(cb.At))
		}
	}
	c.ToPush, c.ToCallback, c.ToVisible = quantiles(toPush), quantiles(toCallback), quantiles(toVisible)
}

// quantiles are the p50 and p99 of ds (which it sorts).
func quantiles(ds []time.Duration) [2]time.Duration {
	slices.Sort(ds)
	n := len(ds)
	if n == 0 {
		return [2]time.Duration{}
	}
	return [2]time.Duration{ds[n/2], ds[min(n-1, n*99/100)]}
}

// judgeCluster adds the cluster's guarantees to the report's failures: a
// GET right after a 2xx finds the payment, and every SIGTERMed instance
// exits 0 within stopDeadline.
func (rep *Report) judgeCluster() {
	c := rep.Cluster
	if rep.NotFoundAfterAccept > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d GETs right after a 2xx answered 404", rep.NotFoundAfterAccept))
	}
	for _, f := range c.Faults {
		if !f.Term {
			continue
		}
		switch {
		case f.Hung:
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: no exit within %s of SIGTERM (killed)", f.What, hungAfter))
		case f.ExitCode != 0:
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: exit code %d after %s", f.What, f.ExitCode, f.Exit.Round(time.Millisecond)))
		case f.Exit > stopDeadline:
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: exited after %s, over the %s stop deadline", f.What, f.Exit.Round(time.Millisecond), stopDeadline))
		}
	}
}

// printCluster writes the cluster's figures.
func (c *clusterFigures) print(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("=== cluster: %d nats-servers, %d instances of each service", c.Nodes, c.Instances)
	p("accepted/s over the load    %.1f", c.AcceptedPerSec)
	p("final/s sustained           %.1f (first request to last record final)", c.FinalPerSec)
	p("request to visible (final)  p50 %s, p99 %s", c.VisibleP50.Round(time.Millisecond), c.VisibleP99.Round(time.Millisecond))
	q := func(d [2]time.Duration) string {
		return fmt.Sprintf("p50 %s, p99 %s", d[0].Round(time.Millisecond), d[1].Round(time.Millisecond))
	}
	p("  request to prompt         %s", q(c.ToPush))
	p("  prompt to callback sent   %s", q(c.ToCallback))
	p("  callback sent to visible  %s", q(c.ToVisible))
	var cpu []string
	for _, u := range c.CPU {
		lead := ""
		if u.Name == c.Leader {
			lead = " (STK leader)"
		}
		cpu = append(cpu, fmt.Sprintf("%s %.1fs%s", u.Name, u.Seconds, lead))
	}
	p("CPU from the load's start   %s", strings.Join(cpu, ", "))
	if len(c.Faults) == 0 {
		return
	}
	p("%-44s %10s %10s %10s %10s  %s", "fault", "took", "first 2xx", "1st push", "stall", "notes")
	d := func(d time.Duration) string {
		if d < 0 {
			return "none"
		}
		return d.Round(10 * time.Millisecond).String()
	}
	for _, f := range c.Faults {
		notes := slices.Clone(f.Notes)
		if f.Term {
			notes = append([]string{fmt.Sprintf("exit %d after %s", f.ExitCode, f.Exit.Round(time.Millisecond))}, notes...)
		}
		p("%-44s %10s %10s %10s %10s  %v", f.What, d(f.End.Sub(f.Start)), d(f.AcceptAfter), d(f.PushAfter), d(f.Stall), notes)
	}
}
