package api

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/events/testkit/logtest"
)

// TestConfigLogged: the configuration logged at start shows every setting
// but the tokens, and no password of a URL, whatever the handler.
func TestConfigLogged(t *testing.T) {
	t.Parallel()
	e := baseEnv()
	e["API_TOKENS"] = "acme:acme-tok-3f9a1c-0123456789abcdef0123,globex:globex-tok-77b2e0-0123456789abcdef0123"
	e["DATABASE_URL"] = "postgres://stk:pg-pw-5c1d@db:5432/stkgate?sslmode=require"
	e["NATS_URL"] = "nats://natsuser:nats-pw-9e4f@nats:4222,nats://nats-tok-2a6b@other:4222,tls://n3:4222"
	cfg, err := ConfigFromEnv(env(e))
	if err != nil {
		t.Fatal(err)
	}
	logtest.CheckConfig(t, cfg, logtest.Options{
		Secrets: []string{"Tokens[].Token"},
		NotLogged: []string{
			"StartTimeout: not read from the environment",
			"ReadHeaderTimeout: not read from the environment",
			"ReadTimeout: not read from the environment",
			"IdleTimeout: not read from the environment",
			"Logger: not a setting",
			"AccessLogger: not a setting",
			"Metrics: not a setting",
			"Tracing.Exporter: tests only",
		},
		Leaks:  []string{"acme-tok-3f9a1c", "globex-tok-77b2e0", "pg-pw-5c1d", "nats-pw-9e4f", "nats-tok-2a6b"},
		Shows:  []string{"acme,globex", "db:5432/stkgate", "nats:4222", "other:4222", "tls://n3:4222"},
		Values: map[string]any{"RateLimit": 7.25, "TrustedProxies": []netip.Prefix{netip.MustParsePrefix("10.7.6.0/24")}},
	})
}

// TestConfigErrorsHideURLCredentials: a NATS_URL refused as malformed is
// named in the error with its credentials hidden, however it is malformed.
func TestConfigErrorsHideURLCredentials(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"natsuser:nats-pw-9e4f@nats:4222", // no scheme: url.Parse finds no user
		"nats://u:nats-pw-9e4f@nats:bad:port",
		"http://u:nats-pw-9e4f@nats:4222",
	} {
		e := baseEnv()
		e["NATS_URL"] = u
		_, err := ConfigFromEnv(env(e))
		if err == nil || !strings.Contains(err.Error(), "NATS_URL") || strings.Contains(err.Error(), "nats-pw-9e4f") {
			t.Errorf("NATS_URL=%q: error %v, want one naming NATS_URL without its password", u, err)
		}
	}
}
