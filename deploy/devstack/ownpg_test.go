package devstack_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/api"
	"github.com/stkgate/stkgate/deploy/devstack"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/openapitest"
	"github.com/stkgate/stkgate/events/testkit/servertest"
)

// TestStartsItsOwnPostgres is `make run` on a machine with no Postgres
// running: the dev stack starts one from the machine's binaries.
func TestStartsItsOwnPostgres(t *testing.T) {
	if _, err := exec.LookPath("initdb"); err != nil {
		if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(m) == 0 {
			t.Skip("no Postgres binaries on this machine: nothing for the dev stack to start")
		}
	}
	defer devstack.SetLocalPostgresAddr(servertest.FreeAddr(t))() // nothing listens there
	// Its cluster is thrown away: fsync off spares initdb's fsyncs.
	defer devstack.SetEmbeddedPostgresNoSync(true)()

	// Postgres may run as another user (never as root), so its files live
	// in a directory that user can reach, not in t.TempDir.
	dataDir, err := os.MkdirTemp("", "stkgate-devstack-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dataDir) })

	ns := natstest.Start(t)
	apiAddr, cbAddr := servertest.FreeAddr(t), servertest.FreeAddr(t)
	env := map[string]string{
		"API_ADDR":         apiAddr,
		"CALLBACK_ADDR":    cbAddr,
		"NATS_URL":         ns.URL,
		"DARAJA_SIM_DELAY": "0s",
		"API_TOKENS":       "acme:" + acmeToken,
		"DEV_PG_PORT":      strconv.Itoa(freePort(t)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan map[string]string, 1)
	go func() {
		done <- devstack.Run(ctx, devstack.Options{
			Getenv:  func(k string) string { return env[k] },
			DataDir: dataDir,
			Out:     io.Discard,
			Logger:  testLogger(),
			Ready:   func(e map[string]string) { ready <- e },
		})
	}()
	returned := false // Run's error is read once: a second read would wait forever
	defer func() {
		cancel()
		if returned {
			return
		}
		if err := <-done; err != nil {
			t.Errorf("devstack.Run: %v", err)
		}
	}()
	select {
	case eff := <-ready:
		if want := "127.0.0.1:" + env["DEV_PG_PORT"]; !strings.Contains(eff["DATABASE_URL"], want) {
			t.Errorf("DATABASE_URL = %q, want the dev stack's own Postgres on %s", eff["DATABASE_URL"], want)
		}
	case err := <-done:
		returned = true
		t.Fatalf("devstack.Run: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("not ready after 90s")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgres", "PG_VERSION")); err != nil {
		t.Errorf("no cluster in the data dir: %v", err)
	}

	s := &stack{api: "http://" + apiAddr,
		client: &http.Client{Transport: openapitest.Load(t, api.OpenAPI).Transport(t, nil)}}
	id := s.accept(t, "0712341032")
	if data := s.waitFinal(t, id); data["status_label"] != "Cancelled by User" {
		t.Errorf("record = %v", data)
	}
	if resp, err := http.Get(s.api + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("healthz: %v", err)
	}
}
