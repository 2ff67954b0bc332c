package main

// The cluster run's CPU figures: each service's processes and Postgres's, read from /proc.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/stkgate/stkgate/deploy/binaries"
	"github.com/stkgate/stkgate/events"
)

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
