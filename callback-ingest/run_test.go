package callback

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/servertest"
)

const oldSecret = "callback-ingest-old-secret-0123456789abcdef"

var rotatedSecrets = func() events.CallbackSecrets {
	s, err := events.ParseCallbackSecrets(testSecret + "," + oldSecret)
	if err != nil {
		panic(err)
	}
	return s
}()

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    Config
		wantErr string
	}{
		{"defaults", map[string]string{"NATS_URL": "nats://127.0.0.1:14222", "CALLBACK_SECRET": testSecret},
			Config{Addr: ":8081", NATSURL: "nats://127.0.0.1:14222", StreamReplicas: 1, Secrets: testSecrets, Confirm: "mismatch", ApplyAfter: 5 * time.Second,
				FastFailure: 2 * time.Second}, ""},
		{"all set", map[string]string{"CALLBACK_ADDR": "127.0.0.1:9000", "NATS_URL": "nats://a:1, tls://b:2", "NATS_STREAM_REPLICAS": "3",
			"CALLBACK_SECRET": testSecret + ", " + oldSecret, "CALLBACK_ALLOW_CIDRS": "196.201.214.0/24, 196.201.213.7, 2001:db8::/32",
			"CALLBACK_TRUSTED_PROXIES": "10.0.0.0/8", "CALLBACK_CONFIRM": "Always", "CALLBACK_APPLY_AFTER": "1500ms",
			"CALLBACK_FAST_FAILURE": "3s"},
			Config{Addr: "127.0.0.1:9000", NATSURL: "nats://a:1, tls://b:2", StreamReplicas: 3, Secrets: rotatedSecrets, Confirm: "always",
				ApplyAfter: 1500 * time.Millisecond, FastFailure: 3 * time.Second,
				Sources: SourcePolicy{
					Allow:          []netip.Prefix{netip.MustParsePrefix("196.201.214.0/24"), netip.MustParsePrefix("196.201.213.7/32"), netip.MustParsePrefix("2001:db8::/32")},
					TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
				}}, ""},
		{"no CALLBACK_SECRET", map[string]string{"NATS_URL": "nats://a:1"}, Config{}, "CALLBACK_SECRET: required"},
		{"short CALLBACK_SECRET", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": "short"}, Config{}, "CALLBACK_SECRET: secret 1"},
		{"short old CALLBACK_SECRET", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret + ",short"}, Config{}, "CALLBACK_SECRET: secret 2"},
		{"CALLBACK_ALLOW_CIDRS not a CIDR", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_ALLOW_CIDRS": "196.201.214/24"}, Config{}, "CALLBACK_ALLOW_CIDRS"},
		{"CALLBACK_ALLOW_CIDRS host bits", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_ALLOW_CIDRS": "196.201.214.9/24"}, Config{}, "CALLBACK_ALLOW_CIDRS: \"196.201.214.9/24\" has host bits set; did you mean 196.201.214.0/24?"},
		{"CALLBACK_TRUSTED_PROXIES not a CIDR", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_TRUSTED_PROXIES": "proxy.local"}, Config{}, "CALLBACK_TRUSTED_PROXIES"},
		{"CALLBACK_CONFIRM unknown", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_CONFIRM": "sometimes"}, Config{}, "CALLBACK_CONFIRM"},
		{"CALLBACK_APPLY_AFTER not a duration", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_APPLY_AFTER": "5"}, Config{}, "CALLBACK_APPLY_AFTER"},
		{"CALLBACK_APPLY_AFTER negative", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_APPLY_AFTER": "-1s"}, Config{}, "CALLBACK_APPLY_AFTER"},
		{"CALLBACK_FAST_FAILURE 0 turns it off", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_FAST_FAILURE": "0"},
			Config{Addr: ":8081", NATSURL: "nats://a:1", StreamReplicas: 1, Secrets: testSecrets, Confirm: "mismatch", ApplyAfter: 5 * time.Second}, ""},
		{"CALLBACK_FAST_FAILURE not a duration", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_FAST_FAILURE": "2"}, Config{}, "CALLBACK_FAST_FAILURE"},
		{"CALLBACK_FAST_FAILURE negative", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_FAST_FAILURE": "-1s"}, Config{}, "CALLBACK_FAST_FAILURE"},
		{"CALLBACK_FAST_FAILURE beyond a prompt's life", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_FAST_FAILURE": "5m"}, Config{}, "CALLBACK_FAST_FAILURE"},
		{"no NATS_URL", map[string]string{"CALLBACK_SECRET": testSecret}, Config{}, "NATS_URL: required"},
		{"NATS_URL without scheme", map[string]string{"NATS_URL": "localhost:14222", "CALLBACK_SECRET": testSecret}, Config{}, "NATS_URL"},
		{"NATS_URL http", map[string]string{"NATS_URL": "http://x:1", "CALLBACK_SECRET": testSecret}, Config{}, "NATS_URL: scheme"},
		{"NATS_URL one bad part", map[string]string{"NATS_URL": "nats://a:1,", "CALLBACK_SECRET": testSecret}, Config{}, "NATS_URL"},
		{"CALLBACK_ADDR without port", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_ADDR": "8081"}, Config{}, "CALLBACK_ADDR"},
		{"CALLBACK_ADDR bad port", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "CALLBACK_ADDR": ":99999"}, Config{}, "CALLBACK_ADDR"},
		{"replicas not a number", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "NATS_STREAM_REPLICAS": "three"}, Config{}, "NATS_STREAM_REPLICAS"},
		{"replicas 0", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "NATS_STREAM_REPLICAS": "0"}, Config{}, "NATS_STREAM_REPLICAS"},
		{"replicas 6", map[string]string{"NATS_URL": "nats://a:1", "CALLBACK_SECRET": testSecret, "NATS_STREAM_REPLICAS": "6"}, Config{}, "NATS_STREAM_REPLICAS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ConfigFromEnv(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one starting %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// tracing.FromEnv is tested in its package.
			tt.want.Tracing = got.Tracing
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b *slog.Logger) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigLogValueHidesCredentials(t *testing.T) {
	t.Parallel()
	cfg := Config{Addr: ":8081", NATSURL: "nats://user:s3cret@a:1,nats://t0ken@b:2,nats://c:3", StreamReplicas: 1}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", cfg)
	out := buf.String()
	if strings.Contains(out, "s3cret") || strings.Contains(out, "t0ken") || strings.Contains(out, "user") {
		t.Errorf("credentials logged: %s", out)
	}
	want := "config.nats_url=nats://REDACTED@a:1,nats://REDACTED@b:2,nats://c:3"
	if !strings.Contains(out, want) {
		t.Errorf("log %s lacks %s", out, want)
	}
	// A malformed URL may be a secret pasted in the wrong place.
	if _, err := ConfigFromEnv(func(k string) string {
		return map[string]string{"NATS_URL": "nats://u:s3cret@:bad:port"}[k]
	}); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %v shows the secret or is missing", err)
	}
}

// TestRun runs the service as main does, takes a callback, and stops on
// cancel.
func TestRun(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	addr := servertest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Addr: addr, NATSURL: ns.URL, StreamReplicas: 1, Secrets: testSecrets, Logger: slog.New(slog.DiscardHandler)})
	}()

	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := http.Get(base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	id := uuid.NewString()
	p := events.Publisher{JS: ns.JS, Source: "stkgate/api"}
	if _, err := p.Publish(ctx, events.Requested{Payment: payment(id)}); err != nil {
		t.Fatal(err)
	}
	res, err := http.Post(base+RoutePrefix+tokenPath(id), "application/json;charset=UTF-8", bytes.NewReader(readFixture(t, "cancelled")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != bodyAccepted {
		t.Errorf("answer %d %s", res.StatusCode, b)
	}
	if _, err := ns.Stream.GetLastMsgForSubject(ctx, events.Subject(events.TypeCompleted, id)); err != nil {
		t.Errorf("no stk.completed: %v", err)
	}
	// Run made STK_CALLBACKS, and the callback is kept there.
	cbs, err := ns.JS.Stream(ctx, events.CallbackStreamName)
	if err != nil {
		t.Fatalf("STK_CALLBACKS: %v", err)
	}
	if _, err := cbs.GetLastMsgForSubject(ctx, events.CallbackSubjectReceived(id)); err != nil {
		t.Errorf("callback not kept: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still serving after Run returned")
	}
}

// TestRunRefuses: configuration JetStream will not accept is an error, not
// an endless wait.
func TestRunRefuses(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	if err := Run(ctx, Config{Logger: log}); err == nil || !strings.Contains(err.Error(), "NATS_URL") {
		t.Errorf("Run without NATS_URL: %v", err)
	}
	if err := Run(ctx, Config{NATSURL: ns.URL, Logger: log}); err == nil || !strings.Contains(err.Error(), "CALLBACK_SECRET") {
		t.Errorf("Run without CALLBACK_SECRET: %v", err)
	}
	// A single server cannot hold three replicas.
	err := Run(ctx, Config{Addr: servertest.FreeAddr(t), NATSURL: ns.URL, StreamReplicas: 3, Secrets: testSecrets, Logger: log})
	if err == nil || ctx.Err() != nil {
		t.Errorf("Run with 3 replicas on one server: %v (ctx %v)", err, ctx.Err())
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	err = Run(ctx, Config{Addr: taken.Addr().String(), NATSURL: ns.URL, StreamReplicas: 1, Secrets: testSecrets, Logger: log})
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Run on a taken address: %v", err)
	}
}
