package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/servertest"
)

// startRun runs Run with cfg and returns the base URL once /readyz is 200,
// and a stop function that cancels Run and returns its error.
func startRun(t *testing.T, cfg Config) (string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	stopped := false
	stop := func() error {
		cancel()
		select {
		case err := <-done:
			stopped = true
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return 30s after cancel")
			return nil
		}
	}
	t.Cleanup(func() {
		if !stopped {
			_ = stop()
		}
	})

	base := "http://" + cfg.Addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base, stop
			}
		}
		select {
		case err := <-done:
			stopped = true // its error is read: stop would wait 30 s for another
			t.Fatalf("Run returned before it was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runConfig(t *testing.T, ns *natstest.Server) Config {
	return Config{
		Addr:        servertest.FreeAddr(t),
		Tokens:      testTokens,
		DatabaseURL: pgtest.NewURL(t),
		NATSURL:     ns.URL,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func call(t *testing.T, method, url, token, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(TokenHeader, token)
	req.Header.Set("Content-Type", ctJSON)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, url, err)
	}
	return resp, m
}

func TestRun(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := context.Background()
	// Run makes the stream if it is missing, as every service does.
	if err := ns.JS.DeleteStream(ctx, events.StreamName); err != nil {
		t.Fatal(err)
	}
	cfg := runConfig(t, ns)
	base, stop := startRun(t, cfg)

	if _, err := ns.JS.Stream(ctx, events.StreamName); err != nil {
		t.Fatalf("stream after start-up: %v", err)
	}
	resp, body := call(t, http.MethodPost, base+PushPath, acmeToken, validBody)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST = %d %v", resp.StatusCode, body)
	}
	id := body["tracking_id"].(string)
	if resp.Header.Get("Location") != RecordPath+id {
		t.Errorf("Location = %q", resp.Header.Get("Location"))
	}
	s, err := ns.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLastMsgForSubject(ctx, events.Subject(events.TypeRequested, id)); err != nil {
		t.Errorf("stk.requested not stored: %v", err)
	}

	// The read model is the one Run migrated; until the projector writes
	// the row, the record is answered from the stream, without an id.
	if resp, body := call(t, http.MethodGet, base+RecordPath+id, acmeToken, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("GET before projection = %d %v", resp.StatusCode, body)
	} else if data, _ := body["data"].(map[string]any); data["id"] != float64(0) || data["status_label"] != "Pending" {
		t.Errorf("GET before projection = %v", body)
	}
	db, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := store.New(db).Apply(ctx, []events.Event{events.Requested{Payment: payment(id, "acme")}}); err != nil {
		t.Fatal(err)
	}
	if resp, body := call(t, http.MethodGet, base+RecordPath+id, acmeToken, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("GET after projection = %d %v", resp.StatusCode, body)
	}
	if resp, _ := call(t, http.MethodGet, base+RecordPath+id, "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET without token = %d", resp.StatusCode)
	}

	if err := stop(); err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still serving after Run returned")
	}
}

func TestRunShutdownEndsSyncWaits(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	cfg := runConfig(t, ns)
	cfg.DispatchMode, cfg.SyncTimeout = ModeSync, 4*time.Minute
	base, stop := startRun(t, cfg)

	// No dispatcher runs: the request waits until the shutdown.
	type result struct {
		status int
		body   map[string]any
		err    error
	}
	got := make(chan result, 1)
	go func() {
		var r result
		defer func() { got <- r }()
		req, err := http.NewRequest(http.MethodPost, base+PushPath, strings.NewReader(validBody))
		if err != nil {
			r.err = err
			return
		}
		req.Header.Set(TokenHeader, acmeToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			r.err = err
			return
		}
		defer resp.Body.Close()
		r.status = resp.StatusCode
		r.err = json.NewDecoder(resp.Body).Decode(&r.body)
	}()
	// Wait until the request is in (its event is in the stream).
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := ns.Stream.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request did not arrive")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Errorf("Run = %v", err)
	}
	select {
	case r := <-got:
		if r.err != nil || r.status != http.StatusAccepted || r.body["tracking_id"] == nil {
			t.Errorf("answer = %d %v %v, want 202", r.status, r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request got no answer")
	}
}

func TestRunStartFailures(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	t.Run("invalid config", func(t *testing.T) {
		err := Run(context.Background(), Config{NATSURL: ns.URL, DatabaseURL: "postgres://x", Logger: log,
			Tokens: []ClientToken{{Client: "a", Token: "t"}, {Client: "b", Token: "t"}}})
		if err == nil || !strings.Contains(err.Error(), "API_TOKENS") {
			t.Errorf("Run = %v", err)
		}
	})

	// Nothing listens on a port just freed.
	deadDB := "postgres://postgres@" + servertest.FreeAddr(t) + "/x?sslmode=disable&connect_timeout=1"

	t.Run("database never answers", func(t *testing.T) {
		err := Run(context.Background(), Config{
			Addr: servertest.FreeAddr(t), Tokens: testTokens, NATSURL: ns.URL, DatabaseURL: deadDB,
			StartTimeout: time.Second, Logger: log,
		})
		if err == nil || !strings.Contains(err.Error(), "open database") {
			t.Errorf("Run = %v", err)
		}
	})

	t.Run("cancelled while starting", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		err := Run(ctx, Config{
			Addr: servertest.FreeAddr(t), Tokens: testTokens, NATSURL: ns.URL, DatabaseURL: deadDB, Logger: log,
		})
		if err != nil {
			t.Errorf("Run = %v, want nil: stopping before start is a clean stop", err)
		}
	})

	t.Run("stream refused", func(t *testing.T) {
		// One server cannot hold three replicas: no wait mends that.
		err := Run(context.Background(), Config{
			Addr: servertest.FreeAddr(t), Tokens: testTokens, NATSURL: ns.URL, DatabaseURL: pgtest.NewURL(t),
			StreamReplicas: 3, StartTimeout: 20 * time.Second, Logger: log,
		})
		var apiErr *jetstream.APIError
		if err == nil || !strings.Contains(err.Error(), "ensure stream") || !errors.As(err, &apiErr) {
			t.Errorf("Run = %v", err)
		}
	})

	t.Run("address taken", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		err = Run(context.Background(), Config{
			Addr: ln.Addr().String(), Tokens: testTokens, NATSURL: ns.URL, DatabaseURL: pgtest.NewURL(t), Logger: log,
		})
		if err == nil || !strings.Contains(err.Error(), "listen") {
			t.Errorf("Run = %v", err)
		}
	})
}

func TestPurgeKeys(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	// More than a batch of expired keys, and some that must stay.
	db.MustExec(`INSERT INTO idempotency_keys (client, key, request_hash, tracking_id, state, holder,
			lease_until, created_at, updated_at, expires_at)
		SELECT 'acme', 'k' || i, 'h', gen_random_uuid(), 'done', gen_random_uuid(),
			now(), now(), now(), now() + CASE WHEN i <= 2500 THEN interval '-1 second' ELSE interval '1 hour' END
		FROM generate_series(1, 2510) AS i`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		purge(ctx, slog.New(slog.DiscardHandler), "expired idempotency keys", store.New(db).PurgeExpiredKeys)
	}()
	deadline := time.Now().Add(10 * time.Second)
	var left int
	for time.Now().Before(deadline) {
		if err := db.Get(&left, `SELECT count(*) FROM idempotency_keys`); err != nil {
			t.Fatal(err)
		}
		if left == 10 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if left != 10 {
		t.Errorf("%d keys left, want the 10 unexpired", left)
	}
}
