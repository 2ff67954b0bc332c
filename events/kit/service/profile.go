package service

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
)

// ProfileEnv names a directory where a service profiles its whole run, for
// the benchmark (make bench -profile): a CPU profile
// <name>-<pid>.cpu.pprof, and at the end its allocations,
// <name>-<pid>.allocs.pprof. Unset or empty: no profiling.
const ProfileEnv = "STKGATE_PROFILE_DIR"

// StartProfile starts the CPU profile of the process name into dir; stop
// ends it and writes the allocations profile. Main calls it when
// ProfileEnv is set; the benchmark's baseline (deploy/cmd/bench-baseline),
// which is no service, calls it itself.
func StartProfile(dir, name string) (stop func(log *slog.Logger), err error) {
	base := filepath.Join(dir, fmt.Sprintf("%s-%d", name, os.Getpid()))
	cpu, err := os.Create(base + ".cpu.pprof")
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		_ = cpu.Close()
		return nil, err
	}
	return func(log *slog.Logger) {
		pprof.StopCPUProfile()
		err := cpu.Close()
		allocs, cerr := os.Create(base + ".allocs.pprof")
		if cerr == nil {
			cerr = errors.Join(pprof.Lookup("allocs").WriteTo(allocs, 0), allocs.Close())
		}
		if err = errors.Join(err, cerr); err != nil {
			log.Error("writing the profiles", "error", err, "dir", dir)
		}
	}, nil
}
