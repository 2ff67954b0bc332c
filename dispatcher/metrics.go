package dispatcher

import (
	"github.com/nats-io/nats.go"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/metrics"
)

// watchMetrics counts the dispatcher's publishes, sets its readiness (NATS
// connected: it has no database) and the consumers its scrapes report.
func (d *dispatcher) watchMetrics(nc *nats.Conn) {
	m := d.cfg.Metrics
	if m == nil {
		return
	}
	d.pub.Metrics = m
	m.SetReadiness(metrics.NATSConnected(nc))
	m.WatchConsumers(d.js,
		metrics.Watch{Stream: events.StreamName, Consumer: events.ConsumerDispatcher},
		metrics.Watch{Stream: events.StreamName, Consumer: events.ConsumerPhoneRelease})
}
