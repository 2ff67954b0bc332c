package binaries

import (
	"errors"
	"os"
	"path/filepath"
)

// FindRoot is the repository: the nearest directory at or above the current one that
// holds go.work.
func FindRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the current directory; pass -root")
		}
		dir = parent
	}
}
