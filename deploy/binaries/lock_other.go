//go:build !unix

package binaries

import (
	"context"
	"errors"
)

// lockDir is not done where flock(2) is not: Shared refuses, and callers
// build into a directory of their own.
func lockDir(context.Context, string) (func(), error) {
	return nil, errors.New("no file locks on this system")
}
