package callback

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/openapitest"
	"github.com/stkgate/stkgate/events/testkit/servertest"
)

// startRun runs the service as main does, with cfg's timeouts, and returns
// its address once /readyz answers 200.
func startRun(t *testing.T, cfg Config) string {
	t.Helper()
	ns := natstest.Start(t)
	cfg.Addr = servertest.FreeAddr(t)
	cfg.NATSURL = ns.URL
	cfg.StreamReplicas = 1
	cfg.Secrets = testSecrets
	cfg.Logger = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := http.Get("http://" + cfg.Addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return cfg.Addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSlowClientsCutOff: against the real server, a client that sends its
// headers or its callback slowly, or sits idle on a kept-alive connection,
// is cut off at the configured timeout, long before it would be done.
func TestSlowClientsCutOff(t *testing.T) {
	t.Parallel()
	cfg := Config{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond, IdleTimeout: 400 * time.Millisecond}
	addr := startRun(t, cfg)
	path := RoutePrefix + tokenPath(uuid.NewString())
	body := readFixture(t, "cancelled")

	const cutOffWithin = 2 * time.Second // the timeouts above, and slack
	tests := []servertest.SlowClient{
		{Name: "headers slowly", First: "POST " + path + " HTTP/1.1\r\nHost: cb\r\n",
			Trickle: strings.Repeat("X-Slow: aaaaaaaaaa\r\n", 50), Answered: "HTTP/1.1 400 ", OrSilence: true, After: cfg.ReadHeaderTimeout},
		{Name: "body slowly", First: fmt.Sprintf("POST %s HTTP/1.1\r\nHost: cb\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, len(body)),
			Trickle: string(body), Answered: "HTTP/1.1 ", After: cfg.ReadTimeout},
		{Name: "idle after a request", First: "GET /healthz HTTP/1.1\r\nHost: cb\r\n\r\n", Answered: "HTTP/1.1 200 ", After: cfg.IdleTimeout},
	}
	servertest.CheckCutOff(t, addr, tests, cutOffWithin)
}

// TestOversizedBodyRefused: through the real server, a callback body over
// MaxBodyBytes is a 413, whether it announces its length or streams without
// end.
func TestOversizedBodyRefused(t *testing.T) {
	t.Parallel()
	addr := startRun(t, Config{})
	url := "http://" + addr + RoutePrefix + tokenPath(uuid.NewString())
	for _, tc := range []struct {
		name string
		body io.Reader
		size int64
	}{
		{"announced", strings.NewReader(strings.Repeat(" ", MaxBodyBytes+1)), MaxBodyBytes + 1},
		{"chunked, endless", servertest.Endless{}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.size
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || string(b) != bodyTooLarge {
				t.Errorf("answer %d %s", resp.StatusCode, b)
			}
		})
	}
}

// TestOversizedHeadersRefused: through the real server, headers over
// MaxHeaderBytes are refused with 431, far below Go's 1 MiB default.
func TestOversizedHeadersRefused(t *testing.T) {
	t.Parallel()
	addr := startRun(t, Config{})
	// The answers are checked against openapi.yaml, the 431 (Go's own, in
	// plain text) with them.
	client := &http.Client{Transport: openapitest.Load(t, OpenAPI).Transport(t, nil)}
	for _, tc := range []struct {
		size int
		want int
	}{
		{MaxHeaderBytes / 2, http.StatusOK},
		{4 * MaxHeaderBytes, http.StatusRequestHeaderFieldsTooLarge},
	} {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Padding", strings.Repeat("a", tc.size))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("headers of %d bytes: %d, want %d", tc.size, resp.StatusCode, tc.want)
		}
	}
}
