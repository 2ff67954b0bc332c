package devstack

import (
	"bytes"
	"strings"
	"testing"
)

// TestBannerHidesSecrets: the start-up banner names every address, with no
// token but the dev stack's own and no credentials of a URL.
func TestBannerHidesSecrets(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       map[string]string
		simulated bool
		shows     []string
		hides     []string
	}{
		{"dev defaults", map[string]string{
			"API_ADDR": ":8080", "API_TOKENS": "dev:" + DefaultToken, "NATS_URL": "nats://127.0.0.1:14222",
			"CALLBACK_BASE_URL": "http://127.0.0.1:8081", "DARAJA_BASE_URL": "http://127.0.0.1:5555",
		}, true, []string{"X-API-Token: " + DefaultToken, "nats://127.0.0.1:14222", "http://127.0.0.1:8081/hooks/stk-push/", "simulator at http://127.0.0.1:5555"}, nil},
		{"real settings", map[string]string{
			"API_ADDR": ":8080", "API_TOKENS": "acme:tok-b4nn3r-acme,globex:tok-b4nn3r-globex",
			"NATS_URL":          "nats://app:nats-b4nn3r-pw@n1:4222,nats://nats-b4nn3r-tok@n2:4222",
			"CALLBACK_BASE_URL": "https://cb-user:cb-b4nn3r-pw@pay.example.com",
			"DARAJA_BASE_URL":   "https://d-user:d-b4nn3r-pw@api.safaricom.co.ke",
			"DATABASE_URL":      "postgres://stk:pg-b4nn3r-pw@db/stkgate",
		}, false,
			[]string{"<one of API_TOKENS>", "n1:4222", "n2:4222", "pay.example.com/hooks/stk-push/", "api.safaricom.co.ke"},
			[]string{"b4nn3r", "cb-user", "d-user"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			printBanner(&b, tc.env, tc.simulated)
			out := b.String()
			for _, s := range tc.shows {
				if !strings.Contains(out, s) {
					t.Errorf("banner lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tc.hides {
				if strings.Contains(out, s) {
					t.Errorf("banner shows %q:\n%s", s, out)
				}
			}
		})
	}
}
