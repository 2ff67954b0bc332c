package devstack

import (
	"context"
	"fmt"
	"io"
	"net"

	"golang.org/x/sync/errgroup"

	"github.com/stkgate/stkgate/events/kit/envconf"
	"github.com/stkgate/stkgate/events/kit/metrics"
)

// metricsSettings are the admin address setting of each service, with the
// address `make run` gives it (Options.Metrics).
var metricsSettings = []struct{ service, setting, def string }{
	{"api", "API_METRICS_ADDR", metrics.DefaultAPIAddr},
	{"projector", "PROJECTOR_METRICS_ADDR", metrics.DefaultProjectorAddr},
	{"dispatcher", "DISPATCHER_METRICS_ADDR", metrics.DefaultDispatcherAddr},
	{"callback-ingest", "CALLBACK_METRICS_ADDR", metrics.DefaultCallbackAddr},
}

// stackMetrics are the services' Registries (nil: that service's metrics
// are off) and their admin listeners.
type stackMetrics struct {
	api, projector, dispatcher, callback *metrics.Registry
	listeners                            []adminListener
}

type adminListener struct {
	service string
	reg     *metrics.Registry
	ln      net.Listener
}

// setMetricsDefaults gives each service its `make run` admin address,
// unless the environment sets one (off included).
func (d *devSetup) setMetricsDefaults() {
	for _, s := range metricsSettings {
		d.env[s.setting] = s.def
	}
}

// openMetrics reads each service's admin address and opens it, making the
// service's Registry; an address unset is off. On an error nothing is
// left open.
func (d *devSetup) openMetrics() (*stackMetrics, error) {
	e := envconf.New(d.lookup)
	addrs := make([]string, len(metricsSettings))
	for i, s := range metricsSettings {
		addrs[i] = metrics.AddrFromEnv(e, s.setting, "")
	}
	if err := e.Err(); err != nil {
		return nil, err
	}
	m := &stackMetrics{}
	regs := []**metrics.Registry{&m.api, &m.projector, &m.dispatcher, &m.callback}
	for i, s := range metricsSettings {
		if addrs[i] == "" {
			continue
		}
		ln, err := metrics.Listen(addrs[i])
		if err != nil {
			m.close()
			return nil, fmt.Errorf("%s: %w", s.setting, err)
		}
		*regs[i] = metrics.New(s.service)
		m.listeners = append(m.listeners, adminListener{s.service, *regs[i], ln})
	}
	return m, nil
}

func (m *stackMetrics) close() {
	for _, l := range m.listeners {
		_ = l.ln.Close()
	}
}

// serve serves each open admin address in g until ctx ends.
func (m *stackMetrics) serve(ctx context.Context, g *errgroup.Group, d *devSetup) {
	for _, l := range m.listeners {
		log := d.log.With("service", l.service)
		g.Go(func() error { return named(l.service+" metrics", l.reg.ServeAdmin(ctx, l.ln, log)) })
	}
}

// printMetrics prints where each service's metrics are, for the banner.
func (m *stackMetrics) printMetrics(w io.Writer) {
	if len(m.listeners) == 0 {
		return
	}
	fmt.Fprintln(w, "Metrics (Prometheus; /healthz and /readyz beside each):")
	for _, l := range m.listeners {
		fmt.Fprintf(w, "  %-16s http://%s/metrics\n", l.service, loopback(l.ln.Addr().String()))
	}
}
