package callback

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/logtest"
)

// TestConfigLogged: the configuration logged at start shows every setting
// but its secrets and the credentials of its URLs, whatever the handler.
func TestConfigLogged(t *testing.T) {
	t.Parallel()
	cfg, err := ConfigFromEnv(func(k string) string {
		return map[string]string{
			"NATS_URL":             "nats://natsuser:nats-pw-9e4f@nats:4222,nats://nats-tok-2a6b@other:4222",
			"CALLBACK_SECRET":      "cb-secret-new-5d1e0123456789abcdefghij,cb-secret-old-77aa0123456789abcdefghij",
			"CALLBACK_ALLOW_CIDRS": "196.201.214.0/24",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	other, err := events.ParseCallbackSecrets("cb-secret-other-9f3c0123456789abcdefghij")
	if err != nil {
		t.Fatal(err)
	}
	logtest.CheckConfig(t, cfg, logtest.Options{
		Secrets:   []string{"Secrets"},
		NotLogged: []string{"Logger: not a setting", "Metrics: not a setting", "ReadHeaderTimeout: not read from the environment", "ReadTimeout: not read from the environment", "IdleTimeout: not read from the environment", "Tracing.Exporter: tests only"},
		Values: map[string]any{
			"Secrets":                other,
			"Sources.Allow":          []netip.Prefix{netip.MustParsePrefix("10.9.8.0/24")},
			"Sources.TrustedProxies": []netip.Prefix{netip.MustParsePrefix("10.7.6.0/24")},
		},
		Leaks: []string{"nats-pw-9e4f", "nats-tok-2a6b", "cb-secret-new-5d1e", "cb-secret-old-77aa", "cb-secret"},
		Shows: []string{"nats:4222", "other:4222", "196.201.214.0/24", "mismatch"},
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
		_, err := ConfigFromEnv(func(k string) string { return map[string]string{"NATS_URL": u, "CALLBACK_SECRET": testSecret}[k] })
		if err == nil || !strings.Contains(err.Error(), "NATS_URL") || strings.Contains(err.Error(), "nats-pw-9e4f") {
			t.Errorf("NATS_URL=%q: error %v, want one naming NATS_URL without its password", u, err)
		}
	}
}
