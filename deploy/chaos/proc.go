package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/stkgate/stkgate/deploy/binaries"
	"github.com/stkgate/stkgate/events/kit/failpoint"
	"github.com/stkgate/stkgate/events/kit/ports"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// proc is one supervised child process: started again after a kill -9 by
// the chaos loop, and after an exit of its own (as an orchestrator would),
// at most maxSelfRestarts times.
type proc struct {
	name string
	path string
	args []string
	env  []string
	log  io.Writer
	// ready reports whether a fresh instance serves; nil means "still
	// running after stableFor".
	ready func(ctx context.Context) error

	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{} // closed when cmd has exited
	killing   bool          // the chaos loop is killing and restarting it
	stopped   bool          // the run is over: no more restarts
	kills     int
	survived  int // kills after which a new instance came back ready
	selfExits int // exits nobody asked for
	// failpointExits: exits with failpoint.ExitCode, a crash the run asked
	// for through STKGATE_FAILPOINTS; each is restarted at once, without
	// counting towards maxSelfRestarts.
	failpointExits int
	startErrs      int
}

const (
	maxSelfRestarts = 30
	selfRestartWait = time.Second
	// failpointRestartWait is the down time after a failpoint crash: an
	// orchestrator's restart, short so that few callbacks are refused.
	failpointRestartWait = 200 * time.Millisecond
	stableFor            = 2 * time.Second
	readyTimeout         = 45 * time.Second
)

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startLocked()
}

func (p *proc) startLocked() error {
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	cmd.SysProcAttr = binaries.SysProcAttr()
	if err := cmd.Start(); err != nil {
		p.startErrs++
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	fmt.Fprintf(p.log, "=== chaos: started %s pid %d at %s\n", p.name, cmd.Process.Pid, time.Now().UTC().Format(time.RFC3339Nano))
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go p.watch(cmd, done)
	return nil
}

// watch waits for cmd to exit and restarts it when nobody asked for the
// exit.
func (p *proc) watch(cmd *exec.Cmd, done chan struct{}) {
	err := cmd.Wait()
	close(done)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.killing || p.stopped || p.cmd != cmd {
		return
	}
	wait := selfRestartWait
	if ee, ok := errors.AsType[*exec.ExitError](err); ok && ee.ExitCode() == failpoint.ExitCode {
		p.failpointExits++
		wait = failpointRestartWait
		fmt.Fprintf(p.log, "=== chaos: %s crashed at a failpoint; restarting in %s\n", p.name, wait)
	} else {
		p.selfExits++
		fmt.Fprintf(p.log, "=== chaos: %s exited by itself (%v); restarting in %s\n", p.name, err, wait)
		if p.selfExits > maxSelfRestarts {
			fmt.Fprintf(p.log, "=== chaos: %s exited %d times; giving up on it\n", p.name, p.selfExits)
			return
		}
	}
	go func() {
		time.Sleep(wait)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.stopped || p.killing || p.cmd != cmd {
			return
		}
		_ = p.startLocked()
	}()
}

// kill9 sends SIGKILL, waits for the exit, stays down for down (calling
// whileDown, if not nil, meanwhile), starts a new instance and waits
// (bounded) until it is ready. An instance that exits while it is waited
// for is restarted like any exit of its own (and counted as one), as an
// orchestrator would: one failed start does not leave the service down
// for the rest of the run.
func (p *proc) kill9(ctx context.Context, down time.Duration, whileDown func()) error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return errors.New("stopped")
	}
	p.killing = true
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.killing = false
		p.mu.Unlock()
	}()

	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%s did not die after SIGKILL", p.name)
		}
	}
	p.mu.Lock()
	p.kills++
	p.mu.Unlock()
	fmt.Fprintf(p.log, "=== chaos: kill -9 %s at %s; down for %s\n", p.name, time.Now().UTC().Format(time.RFC3339Nano), down)
	if whileDown != nil {
		whileDown()
	}
	sleep(ctx, down)
	p.mu.Lock()
	err := p.startLocked()
	p.killing = false
	p.mu.Unlock()
	if err != nil {
		return err
	}
	if err := p.waitReady(ctx); err != nil {
		return err
	}
	p.mu.Lock()
	p.survived++
	p.mu.Unlock()
	return nil
}

// term sends SIGTERM, as an orchestrator's rolling restart does, and
// waits for the exit, up to hardLimit, after which it kills the process
// (a hang: hung is true). It reports how long the exit took and its code,
// then starts a new instance after down (calling whileDown, if not nil,
// meanwhile) and waits until it is ready.
func (p *proc) term(ctx context.Context, hardLimit, down time.Duration, whileDown func()) (took time.Duration, code int, hung bool, err error) {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return 0, 0, false, errors.New("stopped")
	}
	p.killing = true
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.killing = false
		p.mu.Unlock()
	}()
	t0 := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(hardLimit):
		hung = true
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
	took = time.Since(t0)
	code = cmd.ProcessState.ExitCode()
	fmt.Fprintf(p.log, "=== chaos: SIGTERM %s: exited %d after %s (hung: %v)\n", p.name, code, took, hung)
	t0 = time.Now()
	if whileDown != nil {
		whileDown()
	}
	sleep(ctx, down-time.Since(t0))
	p.mu.Lock()
	err = p.startLocked()
	p.killing = false
	p.mu.Unlock()
	if err == nil {
		err = p.waitReady(ctx)
	}
	return took, code, hung, err
}

func (p *proc) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if p.ready == nil {
		// Ready once an instance has run for stableFor; one that exits
		// sooner is restarted by watch, and the new one is waited for.
		var last error
		for {
			p.mu.Lock()
			done := p.done
			p.mu.Unlock()
			select {
			case <-done:
				last = fmt.Errorf("%s exited within %s of its start", p.name, stableFor)
				select {
				case <-ctx.Done():
					return fmt.Errorf("%w, and no instance ran that long within %s", last, readyTimeout)
				case <-time.After(200 * time.Millisecond):
				}
			case <-time.After(stableFor):
				return nil
			case <-ctx.Done():
				if last != nil {
					return fmt.Errorf("%w, and no instance ran that long within %s", last, readyTimeout)
				}
				return ctx.Err()
			}
		}
	}
	var last error
	for {
		if last = p.ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %w", p.name, readyTimeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop ends the process for good: SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	p.mu.Lock()
	p.stopped = true
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// running says whether the current instance has not exited.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// freePort is a free loopback port below the kernel's ephemeral range
// (ports.Free), which the run's processes keep across their restarts: no
// test running beside the run can be given it while a process is down.
func freePort() (int, error) { return ports.Free() }

func sleep(ctx context.Context, d time.Duration) { worker.Sleep(ctx, d) }

// lockedWriter serialises writes of several restarts into one log.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

func (w *lockedWriter) Close() error {
	if c, ok := w.w.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
