package daraja_test

import (
	"testing"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events/testkit/logtest"
)

// TestConfigLogged: a logged client configuration shows every setting but
// the consumer key and secret and the passkey, whatever the handler.
func TestConfigLogged(t *testing.T) {
	cfg := daraja.Config{
		BaseURL:        daraja.SandboxURL,
		ConsumerKey:    "ck-61d0a7",
		ConsumerSecret: "cs-0be3f2",
		ShortCode:      "174379",
		PassKey:        "pk-8c2e95",
	}
	logtest.CheckConfig(t, cfg, logtest.Options{
		Secrets: []string{"ConsumerKey", "ConsumerSecret", "PassKey"},
		NotLogged: []string{
			"HTTPClient: not a setting",
			"Metrics: not a setting",
			"Tracer: not a setting",
			"Now: not a setting",
		},
		Leaks: []string{"ck-61d0a7", "cs-0be3f2", "pk-8c2e95"},
		Shows: []string{daraja.SandboxURL, "174379"},
	})
}
