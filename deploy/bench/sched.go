package main

// How long the run's processes waited for a core: on a shared machine a
// latency is mostly that, and the figure says how much.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// coreUse is one group of the run's processes over a window: CPU time
// used and time spent runnable but waiting for a core, each per second of
// the window (the sum over their threads, so it can pass 1,000).
type coreUse struct {
	Process    string  `json:"process"`
	CPUMsPerS  float64 `json:"cpu_ms_per_s"`
	WaitMsPerS float64 `json:"waited_for_core_ms_per_s"`
	// CPUMsPerPayment is the CPU over the window per payment made final in
	// it (the end-to-end run's).
	CPUMsPerPayment float64 `json:"cpu_ms_per_payment,omitempty"`
}

// schedSnap is each process's CPU and wait time (ns, its threads' from
// /proc/<pid>/task/<tid>/schedstat), and its group, at one time.
type schedSnap struct {
	at    time.Time
	procs map[int]procSched
}

type procSched struct {
	group     string // "" for a process not the run's
	cpu, wait int64
}

// everyProcess is the group of every process on the machine, the run's too.
const everyProcess = "every process on the machine"

// snapSched reads every process: the bench's own ("bench": the load, the
// watcher and JetStream) and every process under it are grouped by
// command name (the services, the fake, postgres with all its backends).
func snapSched() schedSnap {
	s := schedSnap{at: time.Now(), procs: map[int]procSched{}}
	self := os.Getpid()
	parent := map[int]int{}
	comm := map[int]string{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(string(stat[end+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		parent[pid], comm[pid] = ppid, string(stat[open+1:end])
	}
	for pid := range parent {
		var ps procSched
		for p, hops := pid, 0; p > 1 && hops < 8; p, hops = parent[p], hops+1 {
			if p == self {
				ps.group = comm[pid]
				break
			}
		}
		if pid == self {
			ps.group = "bench (load, watcher, JetStream)"
		}
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			f := strings.Fields(string(b))
			if len(f) < 2 {
				continue
			}
			cpu, _ := strconv.ParseInt(f[0], 10, 64)
			wait, _ := strconv.ParseInt(f[1], 10, 64)
			ps.cpu += cpu
			ps.wait += wait
		}
		s.procs[pid] = ps
	}
	return s
}

// coreUseSince is each group's use from a to b, the busiest first, and
// the machine's last. A process that ended within the window is not
// counted.
func coreUseSince(a, b schedSnap) []coreUse {
	secs := b.at.Sub(a.at).Seconds()
	cpu, wait := map[string]int64{}, map[string]int64{}
	for pid, p := range b.procs {
		was := a.procs[pid]
		if was.group != p.group {
			was = procSched{} // a pid used again
		}
		for _, g := range []string{p.group, everyProcess} {
			if g != "" {
				cpu[g] += p.cpu - was.cpu
				wait[g] += p.wait - was.wait
			}
		}
	}
	var out []coreUse
	for g := range cpu {
		out = append(out, coreUse{Process: g,
			CPUMsPerS:  round(float64(cpu[g])/1e6/secs, 1),
			WaitMsPerS: round(float64(wait[g])/1e6/secs, 1)})
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i].Process == everyProcess) != (out[j].Process == everyProcess) {
			return out[j].Process == everyProcess
		}
		return out[i].CPUMsPerS > out[j].CPUMsPerS
	})
	return out
}
