// Package failpoint lets a fault test crash a service at a named point of
// its work, where a kill -9 from outside would land only by chance: between
// keeping a callback and publishing its outcome, say.
//
// Points are off unless STKGATE_FAILPOINTS names them, with the share of
// passes that crash: STKGATE_FAILPOINTS="callback-after-keep=0.05". Only
// `make chaos` and tests set it; a service run without it pays one map
// lookup per pass.
package failpoint

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Env is the variable that enables failpoints.
const Env = "STKGATE_FAILPOINTS"

// ExitCode is the status a process crashed by a failpoint exits with: what
// a shell reports for a kill -9 (128 + 9).
const ExitCode = 137

// Named points.
const (
	// CallbackAfterKeep: callback-ingest has kept a callback raw in
	// STK_CALLBACKS and not yet published its stk.completed.
	CallbackAfterKeep = "callback-after-keep"
)

var (
	once     sync.Once
	points   map[string]float64
	parseErr error
)

// Parse reads a STKGATE_FAILPOINTS value: comma-separated name=share pairs,
// each share within [0, 1].
func Parse(v string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, share, ok := strings.Cut(part, "=")
		p, err := strconv.ParseFloat(strings.TrimSpace(share), 64)
		if !ok || strings.TrimSpace(name) == "" || err != nil || !(p >= 0 && p <= 1) {
			return nil, fmt.Errorf("%s: %q is not name=share with a share from 0 to 1", Env, part)
		}
		out[strings.TrimSpace(name)] = p
	}
	return out, nil
}

func load() {
	points, parseErr = Parse(os.Getenv(Env))
	if parseErr != nil {
		fmt.Fprintln(os.Stderr, "failpoint:", parseErr)
	}
}

// Check reports a malformed STKGATE_FAILPOINTS, for a service to refuse to
// start with.
func Check() error {
	once.Do(load)
	return parseErr
}

// Crash ends the process at once with ExitCode, as a kill -9 would (no
// deferred function runs, nothing is flushed), on the share of passes
// STKGATE_FAILPOINTS gives name.
func Crash(name string) {
	once.Do(load)
	p, ok := points[name]
	if !ok || p <= 0 || rand.Float64() >= p {
		return
	}
	fmt.Fprintf(os.Stderr, "failpoint %s: crashing (%s)\n", name, Env)
	os.Exit(ExitCode)
}
