package devstack

import (
	"bytes"
	"strings"
	"testing"
)

// TestBannerNamesMetrics: make run's banner names where each service's
// metrics are, by the address it listens on, and "off" leaves a service
// out.
func TestBannerNamesMetrics(t *testing.T) {
	d := &devSetup{getenv: func(k string) string {
		if k == "PROJECTOR_METRICS_ADDR" {
			return "off"
		}
		return ""
	}, env: devDefaults()}
	d.setMetricsDefaults()
	for _, k := range []string{"API_METRICS_ADDR", "DISPATCHER_METRICS_ADDR", "CALLBACK_METRICS_ADDR"} {
		d.env[k] = "127.0.0.1:0" // the defaults may be taken on a shared machine
	}
	m, err := d.openMetrics()
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	if m.projector != nil || m.api == nil || m.dispatcher == nil || m.callback == nil {
		t.Fatalf("registries: api %v, projector %v, dispatcher %v, callback %v; want all but the projector's",
			m.api != nil, m.projector != nil, m.dispatcher != nil, m.callback != nil)
	}
	var b bytes.Buffer
	m.printMetrics(&b)
	out := b.String()
	for _, l := range m.listeners {
		if want := l.service + " "; !strings.Contains(out, want) || !strings.Contains(out, "http://"+l.ln.Addr().String()+"/metrics") {
			t.Errorf("banner lacks %s's metrics address %s:\n%s", l.service, l.ln.Addr(), out)
		}
	}
	if strings.Contains(out, "projector") {
		t.Errorf("banner names the projector's metrics, which are off:\n%s", out)
	}
}
