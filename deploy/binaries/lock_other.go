//go:build !unix

package binaries

import (
	"context"
	"errors"
)

// lockDir is not done where flock(2) is not: Shared fails there. Its
// callers, the fault test and the benchmark's smoke run, kill and signal
// processes as only a unix system lets them.
func lockDir(context.Context, string) (func(), error) {
	return nil, errors.New("no file locks on this system")
}
