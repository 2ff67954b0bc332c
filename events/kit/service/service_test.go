package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMainExitCodes(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		code     int
		stderr   string
		notInLog string
	}{
		{"ran and stopped", nil, 0, `"msg":"running"`, ""},
		{"bad configuration", ConfigError(errors.New("NATS_URL: required\nAPI_ADDR: \"x\" is not host:port")), ExitConfig,
			"svc: configuration:\nNATS_URL: required\nAPI_ADDR: \"x\" is not host:port\n", ""},
		{"failed", errors.New("listen: address in use"), ExitFailed, `"msg":"svc failed","service":"svc","error":"listen: address in use"`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := mainWith("svc", func(string) string { return "" }, &stderr, func(ctx context.Context, log *slog.Logger) error {
				if ctx.Err() != nil {
					t.Error("context cancelled before any signal")
				}
				log.Info("running")
				return tc.err
			})
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q, want it to hold %q", stderr.String(), tc.stderr)
			}
		})
	}
}

func TestNewLogger(t *testing.T) {
	var b bytes.Buffer
	NewLogger(&b, "", "api").Info("hello", "tracking_id", "t1")
	var line map[string]any
	if err := json.Unmarshal(b.Bytes(), &line); err != nil {
		t.Fatalf("not JSON: %q", b.String())
	}
	if line["service"] != "api" || line["msg"] != "hello" || line["tracking_id"] != "t1" {
		t.Errorf("line %v", line)
	}
	b.Reset()
	NewLogger(&b, "text", "api").Info("hello")
	if got := b.String(); !strings.Contains(got, "msg=hello service=api") {
		t.Errorf("text line %q", got)
	}
}

func TestConfigErrorOfNil(t *testing.T) {
	if ConfigError(nil) != nil {
		t.Error("ConfigError(nil) is not nil")
	}
}

// TestMainProfiles: with STKGATE_PROFILE_DIR, a run leaves its CPU and
// allocations profiles there.
func TestMainProfiles(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	getenv := func(k string) string {
		if k == ProfileEnv {
			return dir
		}
		return ""
	}
	if code := mainWith("svc", getenv, &stderr, func(context.Context, *slog.Logger) error { return nil }); code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	for _, kind := range []string{"cpu", "allocs"} {
		files, err := filepath.Glob(filepath.Join(dir, "svc-*."+kind+".pprof"))
		if err != nil || len(files) != 1 {
			t.Fatalf("%s profiles %v (%v), want one", kind, files, err)
		}
		if fi, err := os.Stat(files[0]); err != nil || fi.Size() == 0 {
			t.Errorf("%s profile empty or unreadable: %v", kind, err)
		}
	}
}

// TestSettings: Settings names every variable Main reads itself, which the
// deployment files' tests (deploy/container) count as read by every
// service.
func TestSettings(t *testing.T) {
	asked := map[string]bool{}
	mainWith("svc", func(k string) string { asked[k] = true; return "" }, &bytes.Buffer{}, func(context.Context, *slog.Logger) error { return nil })
	want := map[string]bool{}
	for _, k := range Settings() {
		want[k] = true
	}
	if len(asked) != len(want) {
		t.Errorf("Main asked %v, Settings says %v", asked, want)
	}
	for k := range asked {
		if !want[k] {
			t.Errorf("Main asked %s, not in Settings", k)
		}
	}
}
