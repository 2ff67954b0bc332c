package binaries

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Shared builds every binary (Build's whole list, the benchmark's baseline
// among them) into a directory that every process building the same root
// with the same flags shares, and returns it. make test runs the fault
// test and the benchmark's smoke run in two test processes side by side:
// each built the same six race binaries of its own, and linking one is
// seconds of CPU (on a slow machine the smoke run's six took 2m20s). Now
// the first to take the directory's lock links them, and the other finds
// them up to date (go build skips a link whose output already has the
// build ID it would write) once the lock is released.
//
// The directory is a cache, under the user's cache directory (else the
// temporary one), as Go's own build cache is: it is kept for the next run,
// whose builds relink only what changed. A process may keep running a
// binary that a later build replaces: go build writes a new file, never
// into the old one.
func Shared(ctx context.Context, root string, flags []string, logf func(string, ...any)) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	sum := sha256.Sum256([]byte(root + "\x00" + strings.Join(flags, "\x00")))
	dir := filepath.Join(base, "stkgate", "bin-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("shared binaries: %w", err)
	}
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return "", fmt.Errorf("shared binaries: lock %s: %w", dir, err)
	}
	defer unlock()
	all := make([]string, 0, len(targets))
	for _, t := range targets {
		all = append(all, t.out)
	}
	if err := Build(ctx, root, dir, flags, logf, all...); err != nil {
		return "", err
	}
	return dir, nil
}
