// Package binaries builds stkgate's real binaries and starts them as
// processes of their own: the fault test (deploy/chaos) supervises them,
// the benchmark (deploy/bench) measures them.
package binaries

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"time"
)

// targets are the binaries Build makes: the directory of the module each
// is built in, its package and its output's name.
var targets = []struct{ dir, pkg, out string }{
	{"api", "./cmd/api", "api"},
	{"api", "./cmd/projector", "projector"},
	{"dispatcher", "./cmd/dispatcher", "dispatcher"},
	{"callback-ingest", "./cmd/callback-ingest", "callback-ingest"},
	{"deploy", "./cmd/daraja-sim", "daraja-sim"},
	{"events", "github.com/nats-io/nats-server/v2", "nats-server"},
	{"deploy", "./cmd/bench-baseline", "bench-baseline"},
}

// Build compiles every service, the fake and nats-server into bin with go
// build and flags (e.g. -race). The nats-server is built from within the
// events module so that its pinned version is the one used.
// Naming outputs builds only those.
func Build(ctx context.Context, root, bin string, flags []string, logf func(string, ...any), only ...string) error {
	t0 := time.Now()
	built := 0
	for _, t := range targets {
		if len(only) > 0 && !slices.Contains(only, t.out) || len(only) == 0 && t.out == "bench-baseline" {
			continue
		}
		built++
		cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		args := append(append([]string{"build"}, flags...), "-o", filepath.Join(bin, t.out), t.pkg)
		cmd := exec.CommandContext(cctx, "go", args...)
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
