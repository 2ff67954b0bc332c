package main

// The cluster run's faults, injected one after the other under load, and
// the stream leader's node taken down.

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/stkgate/stkgate/deploy/binaries"
	"github.com/stkgate/stkgate/events"
)

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
