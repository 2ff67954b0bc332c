//go:build !unix

package pgserver

import (
	"fmt"
	"os"
	"os/exec"
)

// account is a user to run Postgres as; only unix systems drop privileges.
type account struct{}

func runAs() (*account, error) { return nil, nil }

func (a *account) apply(*exec.Cmd) {}

func prepareDataDir(dir string, _ *account) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	return nil
}
