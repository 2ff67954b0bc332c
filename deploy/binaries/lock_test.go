//go:build unix

package binaries

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestLockDirExcludes: a second lock on a directory waits for the first to
// be released, and gives up when its context ends (the fault test and the
// benchmark's smoke run, two processes, build into one directory).
func TestLockDirExcludes(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := lockDir(ctx, dir); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while the first is held: %v, want a deadline exceeded", err)
	}
	got := make(chan error, 1)
	go func() {
		u, err := lockDir(context.Background(), dir)
		if err == nil {
			u()
		}
		got <- err
	}()
	unlock()
	if err := <-got; err != nil {
		t.Fatalf("lock after the first's release: %v", err)
	}
}
