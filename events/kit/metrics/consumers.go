package metrics

import (
	"context"
	"slices"
	"sync"
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

// WatchConsumers exports the counts of each watched consumer, asked of js
// when scraped (a consumer not found, or a JetStream not answering within
// infoTimeout, is left out of that scrape). Watching a consumer again
// replaces its watch.
func (r *Registry) WatchConsumers(js jetstream.JetStream, watches ...Watch) {
	if r == nil {
		return
	}
	c := r.consumers
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range watches {
		c.watches = slices.DeleteFunc(c.watches, func(o watched) bool {
			return o.Stream == w.Stream && o.Consumer == w.Consumer
		})
		c.watches = append(c.watches, watched{w, js})
	}
}

// consumerCollector is the one collector of a Registry's watched
// consumers.
type consumerCollector struct {
	mu      sync.Mutex
	watches []watched
}

type watched struct {
	Watch
	js jetstream.JetStream
}

func (c *consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- ackPendingDesc
	ch <- redeliveredDesc
	ch <- backlogDesc
}

func (c *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), infoTimeout)
	defer cancel()
	c.mu.Lock()
	watches := slices.Clone(c.watches)
	c.mu.Unlock()
	for _, w := range watches {
		cons, err := w.js.Consumer(ctx, w.Stream, w.Consumer)
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
