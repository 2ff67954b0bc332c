package projector

import (
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/metrics"
)

// watchMetrics sets the projector's readiness checks and the consumers its
// scrapes report.
func (p *projector) watchMetrics(nc *nats.Conn, db *sqlx.DB) {
	m := p.cfg.Metrics
	if m == nil {
		return
	}
	m.SetReadiness(metrics.NATSConnected(nc), metrics.PostgresAnswers(db))
	m.WatchConsumers(p.js,
		metrics.Watch{Stream: events.StreamName, Consumer: events.ConsumerProjector},
		metrics.Watch{Stream: events.AdvisoryStreamName, Consumer: events.ConsumerDeadLetter})
}

// observe counts a committed batch: its size, each event's lag from its
// publication (the stream's timestamp) to now, and each ack.
func (p *projector) observe(items []item) {
	m := p.cfg.Metrics
	if m == nil {
		return
	}
	now := time.Now()
	published := make([]time.Time, 0, len(items))
	for _, it := range items {
		if md, err := it.msg.Metadata(); err == nil {
			published = append(published, md.Timestamp)
		}
		m.Consumed(events.ConsumerProjector, it.ev.Type(), "ack")
	}
	m.ProjectorBatch(now, published)
}
