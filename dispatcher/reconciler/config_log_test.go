package reconciler

import (
	"testing"

	"github.com/stkgate/stkgate/events/testkit/logtest"
)

// TestConfigLogged: the configuration logged at start shows every setting
// but Daraja's credentials and the passwords of its URLs, whatever the
// handler.
func TestConfigLogged(t *testing.T) {
	e := base()
	e["NATS_URL"] = "nats://natsuser:nats-pw-9e4f@nats:4222,nats://nats-tok-2a6b@other:4222"
	e["DARAJA_CONSUMER_KEY"] = "ck-61d0a7"
	e["DARAJA_CONSUMER_SECRET"] = "cs-0be3f2"
	e["DARAJA_PASSKEY"] = "pk-8c2e95"
	cfg, err := ConfigFromEnv(env(e))
	if err != nil {
		t.Fatal(err)
	}
	logtest.CheckConfig(t, cfg, logtest.Options{
		Secrets: []string{"Daraja.ConsumerKey", "Daraja.ConsumerSecret", "Daraja.PassKey"},
		NotLogged: []string{
			"Daraja.HTTPClient: not a setting",
			"Daraja.Metrics: not a setting",
			"Metrics: not a setting",
			"Daraja.Tracer: not a setting",
			"Tracing.Exporter: tests only",
			"Daraja.Now: not a setting",
			"QueryInterval: not read from the environment",
			"QueryMaxInterval: not read from the environment",
			"Concurrency: not read from the environment",
			"ProgressInterval: not read from the environment",
			"ShutdownTimeout: not read from the environment",
			"Logger: not a setting",
		},
		Leaks: []string{"ck-61d0a7", "cs-0be3f2", "pk-8c2e95", "nats-pw-9e4f", "nats-tok-2a6b"},
		Shows: []string{"nats:4222", "other:4222", "174379"},
	})
}
