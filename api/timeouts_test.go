package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/openapitest"
	"github.com/stkgate/stkgate/events/testkit/servertest"
)

// TestSlowClientsCutOff: against the real server (Run), a client that sends
// its headers or body slowly, or sits idle on a kept-alive connection, is
// cut off after the configured timeout, long before it would be done.
func TestSlowClientsCutOff(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	cfg := runConfig(t, ns)
	cfg.ReadHeaderTimeout = 300 * time.Millisecond
	cfg.ReadTimeout = 600 * time.Millisecond
	cfg.IdleTimeout = 400 * time.Millisecond
	base, _ := startRun(t, cfg)
	addr := strings.TrimPrefix(base, "http://")

	const cutOffWithin = 2 * time.Second // the timeouts above, and slack
	body := validBody + strings.Repeat(" ", 200)
	tests := []servertest.SlowClient{
		{Name: "headers slowly",
			First:    "POST " + PushPath + " HTTP/1.1\r\nHost: api\r\n",
			Trickle:  strings.Repeat("X-Slow: aaaaaaaaaa\r\n", 50),
			Answered: "HTTP/1.1 400 ", OrSilence: true, After: cfg.ReadHeaderTimeout},
		{Name: "body slowly",
			First: fmt.Sprintf("POST %s HTTP/1.1\r\nHost: api\r\n%s: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
				PushPath, TokenHeader, acmeToken, len(body)),
			Trickle:  body,
			Answered: "HTTP/1.1 400 ", After: cfg.ReadTimeout},
		{Name: "idle after a request",
			First:    "GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n",
			Answered: "HTTP/1.1 200 ", After: cfg.IdleTimeout},
	}
	servertest.CheckCutOff(t, addr, tests, cutOffWithin)
}

// TestOversizedBodyRefused: through the real server, a body over
// MaxBodyBytes is refused with 413, whether it announces its length or
// streams without one, and without the server reading it all.
func TestOversizedBodyRefused(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	base, _ := startRun(t, runConfig(t, ns))
	for _, tc := range []struct {
		name string
		body io.Reader
		size int64
	}{
		{"announced", strings.NewReader(strings.Repeat("a", MaxBodyBytes+1)), MaxBodyBytes + 1},
		{"chunked, endless", servertest.Endless{}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, base+PushPath, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.size
			req.Header.Set(TokenHeader, acmeToken)
			req.Header.Set("Content-Type", ctJSON)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := http.DefaultClient.Do(req.WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), `"success":false`) {
				t.Errorf("answer %d %s", resp.StatusCode, b)
			}
		})
	}
}

// TestWriteTimeoutOutlastsSyncWait: the write timeout leaves room for the
// longest answer: a body read up to ReadTimeout, then the sync wait, the
// idempotency claim, the phone slot and the publish.
func TestWriteTimeoutOutlastsSyncWait(t *testing.T) {
	t.Parallel()
	for _, sync := range []time.Duration{time.Second, DefaultSyncTimeout, MaxSyncTimeout} {
		cfg, err := Config{NATSURL: "nats://h:1", DatabaseURL: "postgres://x", SyncTimeout: sync}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		srv := newServer(cfg, http.NotFoundHandler())
		need := srv.ReadTimeout + sync + 2*readTimeout + DefaultPublishTimeout
		if srv.WriteTimeout <= need {
			t.Errorf("SYNC_TIMEOUT %s: write timeout %s, want over %s", sync, srv.WriteTimeout, need)
		}
		if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.IdleTimeout <= 0 {
			t.Errorf("a server timeout is unset: %+v", srv)
		}
	}
}

// TestOversizedHeadersRefused: through the real server, headers over
// MaxHeaderBytes are refused with 431, far below Go's 1 MiB default.
func TestOversizedHeadersRefused(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	base, _ := startRun(t, runConfig(t, ns))
	client := &http.Client{Transport: openapitest.Load(t, OpenAPI).Transport(t, nil)}
	for _, tc := range []struct {
		size int
		want int
	}{
		{MaxHeaderBytes / 2, http.StatusUnauthorized}, // read, then refused as unauthenticated
		{4 * MaxHeaderBytes, http.StatusRequestHeaderFieldsTooLarge},
	} {
		req, err := http.NewRequest(http.MethodGet, base+RecordPath+"x", nil)
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
		// Go's server answers the 431 itself, in plain text: openapi.yaml
		// says so, and the client's transport holds the answer to it.
		if ct := resp.Header.Get("Content-Type"); tc.want == http.StatusRequestHeaderFieldsTooLarge && !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("431 Content-Type = %q, want text/plain", ct)
		}
	}
}
