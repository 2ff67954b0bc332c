package devstack

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDevDefaultsListenOnLoopback: the dev stack's api and callback-ingest
// listen on 127.0.0.1 unless told otherwise (its embedded NATS, Postgres and
// simulator always do): a laptop on a café's network serves no one else.
func TestDevDefaultsListenOnLoopback(t *testing.T) {
	env := devDefaults()
	for _, k := range []string{"API_ADDR", "CALLBACK_ADDR"} {
		host, _, err := net.SplitHostPort(env[k])
		if err != nil || host != "127.0.0.1" {
			t.Errorf("%s defaults to %q, want 127.0.0.1:<port>", k, env[k])
		}
	}
}

// TestDevTokens: the dev stack takes short tokens, dev-token among them,
// only while Daraja is a simulator on loopback; with any other Daraja its
// tokens follow the api's rule (at least 32 bytes).
func TestDevTokens(t *testing.T) {
	const long = "acme:0123456789abcdef0123456789abcdef"
	tests := []struct {
		name, tokens, daraja string
		wantErr              string // "" for none
	}{
		{"dev-token, the dev stack's own simulator", "dev:" + DefaultToken, "", ""},
		{"dev-token, a simulator on 127.0.0.1", "dev:" + DefaultToken, "http://127.0.0.1:5555", ""},
		{"dev-token, a simulator on localhost", "dev:" + DefaultToken, "http://localhost:5555", ""},
		{"short token, a simulator on ::1", "acme:short", "http://[::1]:5555", ""},
		{"dev-token, the sandbox", "dev:" + DefaultToken, "https://sandbox.safaricom.co.ke",
			"API_TOKENS: dev-token is refused when DARAJA_BASE_URL is not a simulator on loopback"},
		{"dev-token among others, production", long + ",dev:" + DefaultToken, "https://api.safaricom.co.ke",
			"API_TOKENS: dev-token is refused"},
		{"dev-token, a simulator on another host", "dev:" + DefaultToken, "https://sim.example.com", "API_TOKENS: dev-token is refused"},
		{"short token, the sandbox", "acme:short-token", "https://sandbox.safaricom.co.ke", "API_TOKENS: entry 1 (client acme): the token is 11 bytes long"},
		{"long token, the sandbox", long, "https://sandbox.safaricom.co.ke", ""},
		{"no tokens, the sandbox", "", "https://sandbox.safaricom.co.ke", ""},
		{"malformed", "acme", "", "API_TOKENS: entry 1 is not name:token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tokens, err := devTokens(tc.tokens, tc.daraja)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
			case tc.wantErr != "" && strings.Contains(err.Error(), "short-token"):
				t.Errorf("the error repeats the token: %v", err)
			case tc.wantErr == "" && tc.tokens != "" && len(tokens) == 0:
				t.Errorf("no tokens from %q", tc.tokens)
			}
		})
	}
}

// TestRunRefusesDevTokenWithRealDaraja: Run refuses before it starts anything.
func TestRunRefusesDevTokenWithRealDaraja(t *testing.T) {
	dir := t.TempDir()
	getenv := func(k string) string {
		return map[string]string{"DARAJA_BASE_URL": "https://sandbox.safaricom.co.ke"}[k]
	}
	err := Run(context.Background(), Options{Getenv: getenv, DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "dev-token is refused") {
		t.Fatalf("Run = %v, want dev-token refused", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nats")); !os.IsNotExist(err) {
		t.Errorf("Run started NATS before refusing (%v)", err)
	}
}
