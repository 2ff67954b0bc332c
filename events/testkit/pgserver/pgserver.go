// Package pgserver runs a private Postgres from the machine's own binaries
// (initdb and postgres), for the dev stack and for tests on machines without
// a Postgres to use. Production uses a real, managed Postgres instead.
//
// The server listens on 127.0.0.1 only, trusts every local connection as
// role postgres, and dies with the process that started it.
package pgserver

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/lib/pq" // the "postgres" driver, for the readiness check

	"github.com/stkgate/stkgate/events/kit/ports"
)

// Options of a server.
type Options struct {
	// DataDir holds the cluster: initialised there if it does not hold one
	// yet, reused if it does. Required.
	DataDir string
	// Port to listen on at 127.0.0.1; 0 picks a free one.
	Port int
	// NoSync trades durability for speed, for throwaway clusters in tests:
	// initdb skips its fsyncs and the server runs with fsync off. A crash of
	// the machine can then corrupt the cluster.
	NoSync bool
	// BinDir holds initdb and postgres. Empty means the directory of both on
	// PATH, else the newest /usr/lib/postgresql/<version>/bin (the one that
	// matches DataDir's cluster, when it has one).
	BinDir string
	// Logf receives the server's log lines and what pgserver does; nil
	// discards them (the last lines still go into Start's errors).
	Logf func(format string, args ...any)
}

// Server is a running Postgres.
type Server struct {
	port    int
	dataDir string
	logs    *logTail
	logf    func(string, ...any)

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's result, set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// Timeouts of Start and Stop.
const (
	// readyTimeout bounds Start when ctx has no deadline: a first start
	// includes initdb, which takes seconds on a slow disk.
	readyTimeout = 2 * time.Minute
	// fastStopTimeout is how long Stop waits for a fast shutdown (which
	// aborts open transactions and checkpoints) before an immediate one.
	fastStopTimeout = 30 * time.Second
	killTimeout     = 5 * time.Second
)

// superuser is the role initdb creates and URL connects as.
const superuser = "postgres"

// Start starts a server on o.DataDir, initialising the cluster first if
// needed, and returns once it accepts connections. Stop it with Stop.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.DataDir == "" {
		return nil, errors.New("pgserver: DataDir is required")
	}
	if o.Port < 0 || o.Port > 65535 {
		return nil, fmt.Errorf("pgserver: port %d out of range", o.Port)
	}
	dir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("pgserver: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, readyTimeout)
		defer cancel()
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}

	existing, err := clusterVersion(dir)
	if err != nil {
		return nil, err
	}
	bin, err := findBinDir(o.BinDir, existing)
	if err != nil {
		return nil, err
	}
	acct, err := runAs()
	if err != nil {
		return nil, err
	}
	if err := prepareDataDir(dir, acct); err != nil {
		return nil, err
	}
	if existing == "" {
		logf("pgserver: initialising a cluster in %s with %s", dir, bin)
		if err := initdb(ctx, bin, dir, o.NoSync, acct); err != nil {
			return nil, err
		}
	}

	// A port picked here may be taken by someone else before postgres binds
	// it; then pick another.
	attempts := 1
	if o.Port == 0 {
		attempts = 3
	}
	for i := 0; ; i++ {
		port := o.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				return nil, err
			}
		}
		s, err := start(ctx, bin, dir, port, o.NoSync, acct, logf)
		if err == nil {
			logf("pgserver: listening on 127.0.0.1:%d, data in %s", port, dir)
			return s, nil
		}
		if i+1 >= attempts || !errors.Is(err, errPortInUse) || ctx.Err() != nil {
			return nil, err
		}
		logf("pgserver: port %d was taken; trying another", port)
	}
}

var errPortInUse = errors.New("port in use")

func start(ctx context.Context, bin, dir string, port int, noSync bool, acct *account, logf func(string, ...any)) (*Server, error) {
	args := []string{
		"-D", dir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		// TCP only: the default socket directory may not exist or belong to
		// the machine's own Postgres, and a long DataDir overflows the
		// socket path limit.
		"-c", "unix_socket_directories=",
		"-c", "max_connections=200",
	}
	if noSync {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	s := &Server{
		port:    port,
		dataDir: dir,
		logs:    newLogTail(logf),
		logf:    logf,
		done:    make(chan struct{}),
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	cmd.Stdout = s.logs
	cmd.Stderr = s.logs
	acct.apply(cmd)
	// Postgres must not outlive us: a test binary or dev stack that dies
	// would otherwise leave a server holding the port and the data dir.
	dieWithParent(cmd)
	s.cmd = cmd

	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the thread that started the
		// child exits, not the process; keep this thread alive, locked to
		// this goroutine, for as long as the server runs.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.err = cmd.Wait()
		close(s.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("pgserver: start postgres: %w", err)
	}

	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		if strings.Contains(s.logs.String(), "could not bind") || strings.Contains(s.logs.String(), "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return nil, err
	}
	return s, nil
}

// waitReady polls until the server accepts a connection and answers.
func (s *Server) waitReady(ctx context.Context) error {
	db, err := sql.Open("postgres", s.URL("postgres")+"&connect_timeout=2")
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	defer db.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var one int
		err := db.QueryRowContext(pctx, "SELECT 1").Scan(&one)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("pgserver: postgres exited (%v) before accepting connections:\n%s", s.err, s.logs.String())
		case <-ctx.Done():
			return fmt.Errorf("pgserver: postgres not ready (%v): %w\n%s", err, ctx.Err(), s.logs.String())
		case <-tick.C:
		}
	}
}

// URL is the address of database db on the server, as role postgres.
func (s *Server) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port is the TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// DataDir is the absolute path of the cluster.
func (s *Server) DataDir() string { return s.dataDir }

// Stop shuts the server down (a fast shutdown: open sessions are cut off)
// and waits for it to exit. Calling it again returns the first result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Server) stop() error {
	select {
	case <-s.done:
		return s.exitErr()
	default:
	}
	// SIGINT is Postgres's fast shutdown; SIGQUIT its immediate one, which
	// needs crash recovery at the next start but never hangs.
	for _, step := range []struct {
		sig  os.Signal
		wait time.Duration
	}{{syscall.SIGINT, fastStopTimeout}, {syscall.SIGQUIT, killTimeout}, {os.Kill, killTimeout}} {
		if err := s.cmd.Process.Signal(step.sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("pgserver: stop: %w", err)
		}
		select {
		case <-s.done:
			if step.sig != syscall.SIGINT {
				return fmt.Errorf("pgserver: postgres did not shut down in %s; sent %v", fastStopTimeout, step.sig)
			}
			return s.exitErr()
		case <-time.After(step.wait):
			s.logf("pgserver: postgres still running after %v", step.sig)
		}
	}
	return errors.New("pgserver: postgres did not exit")
}

func (s *Server) exitErr() error {
	if s.err != nil {
		return fmt.Errorf("pgserver: postgres exited: %w\n%s", s.err, s.logs.String())
	}
	return nil
}

// clusterVersion is the major version of the cluster in dir, "" if dir
// holds none (missing or empty). Anything else in dir is refused rather than
// overwritten.
func clusterVersion(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "PG_VERSION"))
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("pgserver: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("pgserver: %w", err)
	}
	if len(entries) > 0 {
		return "", fmt.Errorf("pgserver: %s is neither empty nor a Postgres cluster", dir)
	}
	return "", nil
}

// findBinDir returns the directory holding initdb and postgres.
func findBinDir(explicit, want string) (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if explicit != "" {
		if !has(explicit) {
			return "", fmt.Errorf("pgserver: no initdb and postgres in %s", explicit)
		}
		return explicit, nil
	}

	// Debian and Ubuntu keep each major version apart; the newest is the
	// default, but a cluster must be run by its own major version.
	var versioned []string
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for _, m := range matches {
		if has(m) {
			versioned = append(versioned, m)
		}
	}
	sort.Slice(versioned, func(i, j int) bool { return versionOf(versioned[i]) < versionOf(versioned[j]) })
	if want != "" {
		for _, d := range versioned {
			if filepath.Base(filepath.Dir(d)) == want {
				return d, nil
			}
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		if d := filepath.Dir(p); has(d) {
			return d, nil
		}
	}
	if len(versioned) > 0 {
		return versioned[len(versioned)-1], nil
	}
	return "", errors.New("pgserver: no Postgres binaries (initdb, postgres) on PATH or in /usr/lib/postgresql/*/bin")
}

func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func initdb(ctx context.Context, bin, dir string, noSync bool, acct *account) error {
	args := []string{
		"-D", dir,
		"-U", superuser,
		"--auth=trust",
		"--encoding=UTF8",
		"--locale=C",
	}
	if noSync {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), args...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	acct.apply(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgserver: initdb: %w\n%s", err, out)
	}
	return nil
}

// childEnv is our environment without the settings that would point
// initdb or postgres at another cluster or locale.
func childEnv() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=")
	})
	return append(env, "LANG=C")
}

// freePort is a port below the kernel's ephemeral range (ports.Free): a
// server stopped and started again (the chaos test) gets its port back
// even while tests beside it open ports of their own.
func freePort() (int, error) {
	p, err := ports.Free()
	if err != nil {
		return 0, fmt.Errorf("pgserver: %w", err)
	}
	return p, nil
}

// logTail passes the server's output, line by line, to logf and keeps the
// last lines for error messages.
type logTail struct {
	mu      sync.Mutex
	logf    func(string, ...any)
	partial []byte
	lines   []string
}

const tailLines = 40

func newLogTail(logf func(string, ...any)) *logTail { return &logTail{logf: logf} }

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		l.logf("postgres: %s", line)
		l.lines = append(l.lines, line)
		if len(l.lines) > tailLines {
			l.lines = l.lines[len(l.lines)-tailLines:]
		}
	}
	return len(p), nil
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(append(slices.Clone(l.lines), string(l.partial)), "\n")
}
