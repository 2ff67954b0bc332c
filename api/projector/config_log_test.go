package projector

import (
	"testing"

	"github.com/stkgate/stkgate/events/testkit/logtest"
)

// TestConfigLogged: the configuration logged at start shows every setting
// but the passwords of its URLs, whatever the handler.
func TestConfigLogged(t *testing.T) {
	t.Parallel()
	cfg, err := ConfigFromEnv(func(k string) string {
		return map[string]string{
			"DATABASE_URL": "postgres://stk:pg-pw-5c1d@db:5432/stkgate?sslmode=require",
			"NATS_URL":     "nats://natsuser:nats-pw-9e4f@nats:4222,nats://nats-tok-2a6b@other:4222",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	logtest.CheckConfig(t, cfg, logtest.Options{
		NotLogged: []string{
			"Logger: not a setting",
			"Metrics: not a setting",
			"Tracing.Exporter: tests only",
			"RetryMaxInterval: not read from the environment",
			"StartTimeout: not read from the environment",
			"ApplyTimeout: not read from the environment",
			"DrainTimeout: not read from the environment",
		},
		Leaks: []string{"pg-pw-5c1d", "nats-pw-9e4f", "nats-tok-2a6b"},
		Shows: []string{"db:5432/stkgate", "nats:4222", "other:4222"},
	})
}
