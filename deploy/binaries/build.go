// Package binaries builds stkgate's real binaries and starts them as
// processes of their own: the fault test (deploy/chaos) supervises them,
// the benchmark (deploy/bench) measures them.
package binaries

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// targets are the binaries Build makes: the module each is in, its package
// (relative to the module's directory, or a dependency's import path) and
// its output's name, which go build derives from the package's path.
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
// build and flags (e.g. -race). Naming outputs builds only those.
//
// One go build over the workspace (root's go.work) builds them all: the
// nats-server is the version the workspace pins, the one the events module
// requires, as a build from within that module gives. Each go build
// loads the workspace's packages before it finds its one binary up to
// date: one per binary, as there were, cost 4 CPU-seconds and 5 to 13 s
// of a run on a loaded 2-core machine when every binary was up to date,
// one for all a fifth of that.
func Build(ctx context.Context, root, bin string, flags []string, logf func(string, ...any), only ...string) error {
	t0 := time.Now()
	var pkgs []string
	for _, t := range targets {
		if len(only) > 0 && !slices.Contains(only, t.out) || len(only) == 0 && t.out == "bench-baseline" {
			continue
		}
		pkg := t.pkg
		if strings.HasPrefix(pkg, "./") {
			pkg = "./" + path.Join(t.dir, pkg)
		}
		pkgs = append(pkgs, pkg)
	}
	if len(pkgs) == 0 {
		return nil
	}
	// Five minutes a binary, as when each had a go build of its own.
	cctx, cancel := context.WithTimeout(ctx, time.Duration(len(pkgs))*5*time.Minute)
	defer cancel()
	// A trailing separator makes -o a directory even for one package.
	args := append(append(append([]string{"build"}, flags...), "-o", bin+string(filepath.Separator)), pkgs...)
	cmd := exec.CommandContext(cctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(root, "go.work"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s in %s: %w\n%s", strings.Join(pkgs, " "), root, err, out)
	}
	logf("built %d binaries in %s", len(pkgs), time.Since(t0).Round(time.Millisecond))
	return nil
}
