package callback

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/failpoint"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/service"
	"github.com/stkgate/stkgate/events/kit/tracing"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// HTTP server timeouts. A callback is a small body sent at once; slow
// clients only hold connections.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	// writeTimeout outlasts a callback's three NATS steps (look up, keep,
	// publish), each bounded by DefaultTimeout.
	writeTimeout = 25 * time.Second
	idleTimeout  = 60 * time.Second
	// shutdownTimeout lets in-flight callbacks finish their publish.
	shutdownTimeout = 25 * time.Second
)

// Run connects to NATS, makes sure the STK and STK_CALLBACKS streams exist,
// and serves callbacks on cfg.Addr until ctx is cancelled; then it stops
// accepting, lets the callbacks in flight finish and returns nil.
//
// A zero Addr or StreamReplicas takes its default, so that the dev stack can
// compose Run with a Config literal.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.StreamReplicas == 0 {
		cfg.StreamReplicas = DefaultStreamReplicas
	}
	if cfg.Confirm == "" {
		cfg.Confirm = ConfirmMismatch
	}
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("callback-ingest config: %w", err)
	}
	if err := failpoint.Check(); err != nil {
		return fmt.Errorf("callback-ingest: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	tp, stopTracing := tracing.Start(cfg.Tracing, log)
	defer stopTracing()

	// A NATS that is down at start-up or later is waited for: the service
	// answers 503 (and /readyz says so) meanwhile.
	nc, js, err := events.ConnectJetStream(cfg.NATSURL, "stkgate-callback-ingest", log)
	if err != nil {
		return err
	}
	defer events.Close(nc, log)
	stream, receipts, err := ensureStream(ctx, log, js, cfg.StreamReplicas)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	opts := Options{JS: js, Stream: stream, Conn: nc, Logger: log,
		Secrets: cfg.Secrets, Sources: cfg.Sources, Confirm: cfg.Confirm, FastFailure: cfg.FastFailure,
		Receipts: receipts, Metrics: cfg.Metrics}
	cfg.Metrics.SetReadiness(metrics.NATSConnected(nc))
	cfg.Metrics.WatchConsumers(js, metrics.Watch{Stream: events.CallbackStreamName, Consumer: events.ConsumerCallbackApply})
	opts.Tracer = tracing.Tracer(tp)
	handler, err := NewHandler(opts)
	if err != nil {
		return err
	}
	applier, err := NewApplier(opts, cfg.ApplyAfter)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Addr:              cfg.Addr,
		Handler:           handler,
		ReadHeaderTimeout: cmp.Or(cfg.ReadHeaderTimeout, readHeaderTimeout),
		ReadTimeout:       cmp.Or(cfg.ReadTimeout, readTimeout),
		WriteTimeout:      writeTimeout,
		IdleTimeout:       cmp.Or(cfg.IdleTimeout, idleTimeout),
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	log.Info("callback-ingest listening", "addr", ln.Addr().String())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return applier.Run(gctx) })
	g.Go(func() error { return service.Serve(gctx, srv, ln, shutdownTimeout) })
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("callback-ingest stopped")
	return nil
}

// ensureStream creates or updates the STK and STK_CALLBACKS streams and the
// receipts bucket (events.ReceiptsBucket), and returns STK and the bucket,
// retrying while NATS is unreachable, until ctx is done (worker.RetryStart:
// JetStream refusing the stream, too many replicas for the cluster say, is
// final).
func ensureStream(ctx context.Context, log *slog.Logger, js jetstream.JetStream, replicas int) (jetstream.Stream, jetstream.KeyValue, error) {
	type made struct {
		stream   jetstream.Stream
		receipts jetstream.KeyValue
	}
	m, err := worker.RetryStart(ctx, log, "ensure streams", func(ctx context.Context) (made, error) {
		var m made
		var err error
		if m.stream, err = events.EnsureStream(ctx, js, replicas); err != nil {
			return m, err
		}
		if _, err = events.EnsureCallbackStream(ctx, js, replicas); err != nil {
			return m, err
		}
		m.receipts, err = worker.EnsureBucket(ctx, js, events.ReceiptsConfig(replicas))
		return m, err
	})
	return m.stream, m.receipts, err
}
