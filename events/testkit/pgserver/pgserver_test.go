package pgserver

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dataDir returns a fresh directory for a cluster. Not t.TempDir: its
// parent is mode 0700, and as root the server runs as another user, which
// must be able to enter every parent of its data directory.
func dataDir(t *testing.T) string {
	t.Helper()
	parent, err := os.MkdirTemp("", "pgserver-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(parent, "data")
}

func query(t *testing.T, url, q string, args ...any) string {
	t.Helper()
	db, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out sql.NullString
	if err := db.QueryRowContext(ctx, q, args...).Scan(&out); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out.String
}

func execSQL(t *testing.T, url, q string) {
	t.Helper()
	db, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestStartStopRestart(t *testing.T) {
	dir := dataDir(t)
	ctx := context.Background()

	s, err := Start(ctx, Options{DataDir: dir, NoSync: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	if s.Port() == 0 || s.Port() == 5432 {
		t.Fatalf("Port() = %d, want a free port other than 5432", s.Port())
	}
	url := s.URL("postgres")
	if want := "postgres://postgres@127.0.0.1:"; !strings.HasPrefix(url, want) {
		t.Fatalf("URL = %q, want prefix %q", url, want)
	}
	if got := query(t, url, "SELECT current_user"); got != "postgres" {
		t.Errorf("current_user = %q, want postgres", got)
	}
	if got := query(t, url, "SHOW fsync"); got != "off" {
		t.Errorf("fsync = %q with NoSync, want off", got)
	}
	execSQL(t, url, "CREATE DATABASE kept")
	execSQL(t, s.URL("kept"), "CREATE TABLE t (v text); INSERT INTO t VALUES ('still here')")

	if os.Geteuid() == 0 {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid == 0 {
			t.Errorf("data dir owned by root; want the unprivileged user Postgres runs as")
		}
	}

	pid := s.cmd.Process.Pid
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postgres (pid %d) still running after Stop: kill 0 = %v", pid, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid left behind: %v", err)
	}

	// The same data dir again, on a fixed port this time: the cluster is
	// reused, not initialised anew.
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Start(ctx, Options{DataDir: dir, Port: port, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Stop() })
	if s2.Port() != port {
		t.Errorf("Port() = %d, want %d", s2.Port(), port)
	}
	if got := query(t, s2.URL("kept"), "SELECT v FROM t"); got != "still here" {
		t.Errorf("after restart: %q, want the row written before", got)
	}

	// A second server cannot run on a data dir in use.
	if s3, err := Start(ctx, Options{DataDir: dir, Logf: t.Logf}); err == nil {
		_ = s3.Stop()
		t.Fatal("second Start on a data dir in use succeeded")
	}
	if err := s2.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

func TestStartRefusesForeignDir(t *testing.T) {
	dir := dataDir(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Start(context.Background(), Options{DataDir: dir})
	if err == nil {
		_ = s.Stop()
		t.Fatal("Start in a non-empty directory that is no cluster succeeded")
	}
	if !strings.Contains(err.Error(), "neither empty nor a Postgres cluster") {
		t.Errorf("error = %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "notes.txt")); err != nil || string(b) != "mine" {
		t.Errorf("the directory's content was touched: %q, %v", b, err)
	}
}

func TestStartOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no data dir", Options{}, "DataDir is required"},
		{"bad port", Options{DataDir: "x", Port: 70000}, "out of range"},
		{"bad bin dir", Options{DataDir: filepath.Join(t.TempDir(), "d"), BinDir: t.TempDir()}, "no initdb and postgres"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Start(context.Background(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start(%+v) = %v, want an error containing %q", tc.o, err, tc.want)
			}
		})
	}
}

func TestLogTail(t *testing.T) {
	var got []string
	l := newLogTail(func(format string, args ...any) { got = append(got, args[0].(string)) })
	for i := 0; i < tailLines+5; i++ {
		_, _ = l.Write([]byte("line "))
		_, _ = l.Write([]byte(string(rune('a'+i%26)) + "\n"))
	}
	_, _ = l.Write([]byte("unfinished"))
	if len(got) != tailLines+5 {
		t.Fatalf("logf got %d lines, want %d", len(got), tailLines+5)
	}
	lines := strings.Split(l.String(), "\n")
	if len(lines) != tailLines+1 || lines[len(lines)-1] != "unfinished" {
		t.Fatalf("tail has %d lines ending %q, want %d ending with the partial line", len(lines), lines[len(lines)-1], tailLines+1)
	}
}
