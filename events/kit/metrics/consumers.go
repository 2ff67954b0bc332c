package metrics

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Watch names a durable consumer whose counts are exported on each scrape.
// BacklogReason, when set, also counts what the consumer holds (pending and
// unacknowledged) as the reconciler's backlog for that reason.
type Watch struct {
	Stream, Consumer string
	BacklogReason    string
}

// infoTimeout bounds the consumer lookups of one scrape.
const infoTimeout = 2 * time.Second

var (
	pendingDesc = prometheus.NewDesc(Namespace+"_consumer_pending_messages",
		"Messages of the stream the consumer has not delivered yet.", []string{"consumer"}, nil)
	ackPendingDesc = prometheus.NewDesc(Namespace+"_consumer_ack_pending_messages",
		"Messages delivered to the consumer and not settled yet.", []string{"consumer"}, nil)
	redeliveredDesc = prometheus.NewDesc(Namespace+"_consumer_redelivered_messages",
		"Messages delivered more than once and not settled yet.", []string{"consumer"}, nil)
	backlogDesc = prometheus.NewDesc(Namespace+"_reconciler_backlog_payments",
		"Payments the reconciler watches, by reason (awaiting_outcome: pushed, no outcome yet; awaiting_dispatch: requested, not pushed yet).", []string{"reason"}, nil)
)

func consumerGaugeNames() []string {
	return []string{
		Namespace + "_consumer_pending_messages",
		Namespace + "_consumer_ack_pending_messages",
		Namespace + "_consumer_redelivered_messages",
		Namespace + "_reconciler_backlog_payments",
	}
}

// WatchConsumers exports the counts of each watched consumer, asked of
// JetStream when scraped (a consumer not found, or a JetStream not
// answering within infoTimeout, is left out of that scrape).
func (r *Registry) WatchConsumers(js jetstream.JetStream, watches ...Watch) {
	if r == nil {
		return
	}
	r.wrap.MustRegister(consumerCollector{js: js, watches: watches})
}

type consumerCollector struct {
	js      jetstream.JetStream
	watches []Watch
}

func (c consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- ackPendingDesc
	ch <- redeliveredDesc
	ch <- backlogDesc
}

func (c consumerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), infoTimeout)
	defer cancel()
	for _, w := range c.watches {
		cons, err := c.js.Consumer(ctx, w.Stream, w.Consumer)
		if err != nil {
			continue
		}
		info := cons.CachedInfo()
		ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(info.NumPending), w.Consumer)
		ch <- prometheus.MustNewConstMetric(ackPendingDesc, prometheus.GaugeValue, float64(info.NumAckPending), w.Consumer)
		ch <- prometheus.MustNewConstMetric(redeliveredDesc, prometheus.GaugeValue, float64(info.NumRedelivered), w.Consumer)
		if w.BacklogReason != "" {
			ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(info.NumPending+uint64(info.NumAckPending)), w.BacklogReason)
		}
	}
}
