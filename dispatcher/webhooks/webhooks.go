// Package webhooks is the webhooks worker: it tells each client's endpoints
// of the STK events they asked for, as Standard Webhooks signed POSTs whose
// body is the event's CloudEvents envelope (docs/WEBHOOKS.md).
//
// Two durable consumers, so that nothing is lost to a crash and nothing is
// sent twice for one cause:
//
//   - the fan-out reads the STK stream; for each event and each endpoint of
//     its client that wants its type it records a delivery in Postgres and
//     publishes a task to STK_WEBHOOKS (Nats-Msg-Id "<event id>:<endpoint
//     id>"), then acks the event; a client's callback_url endpoint stands
//     for the URL its payment's stk.requested carried, if any;
//   - the delivery consumer tries each task: 2xx delivers it, 410 disables
//     the endpoint, anything else is retried on the Backoff schedule, the
//     waits kept by JetStream (NakWithDelay), until RetryFor has passed.
//
// Every attempt is recorded in Postgres (webhook_attempts).
package webhooks

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/webhook"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// Source is the CloudEvents source of nothing: the worker publishes no
// event, only tasks. It names the worker's NATS connection.
const connName = "stkgate-webhooks"

// Run runs the worker until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	log := cfg.Logger
	sealer, err := webhook.NewSealer(cfg.SecretKeys)
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	nc, js, err := events.ConnectJetStream(cfg.NATSURL, connName, log)
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	defer events.Close(nc, log)
	sqlDB, err := worker.RetryStart(ctx, log, "webhooks: open database", func(ctx context.Context) (*sqlx.DB, error) {
		return store.OpenMigrated(ctx, cfg.DatabaseURL)
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer sqlDB.Close()
	db := store.New(sqlDB).WithLogger(log)
	type consumers struct{ fanOut, deliver jetstream.Consumer }
	cons, err := worker.RetryStart(ctx, log, "webhooks set-up", func(ctx context.Context) (c consumers, err error) {
		if _, err = events.EnsureStream(ctx, js, cfg.StreamReplicas); err != nil {
			return c, err
		}
		if _, err = js.CreateOrUpdateStream(ctx, TaskStreamConfig(cfg.StreamReplicas)); err != nil {
			return c, fmt.Errorf("stream %s: %w", TaskStreamName, err)
		}
		if c.fanOut, err = js.CreateOrUpdateConsumer(ctx, events.StreamName, FanOutConsumer()); err != nil {
			return c, fmt.Errorf("consumer %s: %w", ConsumerFanOut, err)
		}
		if c.deliver, err = js.CreateOrUpdateConsumer(ctx, TaskStreamName, DeliverConsumer()); err != nil {
			return c, fmt.Errorf("consumer %s: %w", ConsumerDeliver, err)
		}
		return c, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	w := &runner{
		cfg:    cfg,
		log:    log,
		js:     js,
		store:  db,
		sealer: sealer,
		client: webhook.NewClient(webhook.ClientConfig{
			Policy: cfg.Policy, Lookup: cfg.Lookup, Timeout: cfg.Timeout, TLS: cfg.TLS,
		}),
		eps: newEndpoints(cfg.PerEndpoint, cfg.PerClient, cfg.BreakerFailures, cfg.BreakerCooldown, maxBreakerCooldown, cfg.Timeout+5*time.Second),
	}
	cfg.Metrics.SetReadiness(metrics.NATSConnected(nc), metrics.PostgresAnswers(sqlDB))
	cfg.Metrics.WatchConsumers(js,
		metrics.Watch{Stream: events.StreamName, Consumer: ConsumerFanOut},
		metrics.Watch{Stream: TaskStreamName, Consumer: ConsumerDeliver})
	log.Info("webhooks worker started", "config", cfg)
	done := make(chan struct{}, 2)
	go func() {
		worker.Pool{Name: ConsumerFanOut, Concurrency: 4, FetchWait: cfg.FetchWait, Log: log, Metrics: cfg.Metrics}.Run(ctx, cons.fanOut, w.fanOut)
		done <- struct{}{}
	}()
	go func() {
		worker.Pool{Name: ConsumerDeliver, Concurrency: cfg.Concurrency, FetchWait: cfg.FetchWait, ProgressEvery: 10 * time.Second, Log: log, Metrics: cfg.Metrics}.Run(ctx, cons.deliver, w.deliver)
		done <- struct{}{}
	}()
	if cfg.Ready != nil {
		cfg.Ready()
	}
	<-done
	<-done
	return nil
}

// runner is the running worker.
type runner struct {
	cfg    Config
	log    *slog.Logger
	js     jetstream.JetStream
	store  *store.Store
	sealer *webhook.Sealer
	client *webhook.Client
	eps    *endpoints
	// unopened: endpoints whose previous secret did not open, logged once.
	unopened sync.Map
}

type task = webhook.Task
