package callback

import (
	"testing"

	"github.com/stkgate/stkgate/events/logtest"
)

// TestConfigLogged: the configuration logged at start shows every setting
// but its secrets and the credentials of its URLs, whatever the handler.
func TestConfigLogged(t *testing.T) {
	cfg, err := ConfigFromEnv(func(k string) string {
		return map[string]string{
			"NATS_URL": "nats://natsuser:nats-pw-9e4f@nats:4222,nats://nats-tok-2a6b@other:4222",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	logtest.CheckConfig(t, cfg, logtest.Options{
		NotLogged: []string{"Logger: not a setting"},
		Leaks:     []string{"nats-pw-9e4f", "nats-tok-2a6b"},
		Shows:     []string{"nats:4222", "other:4222"},
	})
}
