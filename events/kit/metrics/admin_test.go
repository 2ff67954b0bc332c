package metrics_test

import (
	"net"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/events/kit/metrics"
)

// TestAddrSetting: an admin address is on loopback unless set, "off"
// turns it off, and a malformed one is an error naming the setting.
func TestAddrSetting(t *testing.T) {
	for _, def := range []string{metrics.DefaultAPIAddr, metrics.DefaultProjectorAddr, metrics.DefaultDispatcherAddr, metrics.DefaultCallbackAddr, metrics.DefaultWebhooksAddr} {
		host, _, err := net.SplitHostPort(def)
		if err != nil || !net.ParseIP(host).IsLoopback() {
			t.Errorf("default %s is not on loopback", def)
		}
	}
	for _, tc := range []struct {
		value, want string
		bad         bool
	}{
		{"", metrics.DefaultAPIAddr, false},
		{"off", "", false},
		{":9101", ":9101", false},
		{"9101", metrics.DefaultAPIAddr, true},
	} {
		got, err := metrics.AddrSetting(func(string) string { return tc.value }, "API_METRICS_ADDR", metrics.DefaultAPIAddr)
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("%q: %q, %v; want %q, error %v", tc.value, got, err, tc.want, tc.bad)
		}
		if err != nil && !strings.Contains(err.Error(), "API_METRICS_ADDR") {
			t.Errorf("%q: error %q does not name the setting", tc.value, err)
		}
	}
}
