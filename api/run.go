package api

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/service"
	"github.com/stkgate/stkgate/events/kit/tracing"
	"github.com/stkgate/stkgate/events/kit/webhook"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// HTTP server timeouts (the defaults of Config's). A request is a small
// body sent at once; a client slower than that only holds a connection, and
// is cut off. Only sync mode holds a response open, for up to SyncTimeout.
const (
	readHeaderTimeout = 5 * time.Second
	serverReadTimeout = 15 * time.Second
	idleTimeout       = 60 * time.Second
	// writeSlack is what WriteTimeout allows past ReadTimeout (the body,
	// read after the write deadline is set) and SyncTimeout (the wait,
	// counted from before the body is read): the idempotency claim and the
	// prompt reservation (readTimeout each), the publish
	// (DefaultPublishTimeout) and the write itself.
	writeSlack = 2*readTimeout + DefaultPublishTimeout + 5*time.Second
	// shutdownTimeout lets in-flight requests finish their publish.
	shutdownTimeout = DefaultPublishTimeout + 10*time.Second
)

// Run connects to NATS and Postgres, migrates the read model (so that the
// api does not depend on the projector having started), makes sure the STK
// stream exists, and serves the HTTP API on cfg.Addr until ctx is cancelled;
// then it stops accepting, lets the requests in flight finish (sync waits
// answer 202 at once) and returns nil. Start-up is retried with backoff for
// up to cfg.StartTimeout, as Postgres or NATS may come up after the api.
func Run(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	log := cfg.Logger
	tp, stopTracing := tracing.Start(cfg.Tracing, log)
	defer stopTracing()

	nc, js, err := connectNATS(cfg.NATSURL, log)
	if err != nil {
		return err
	}
	defer nc.Close() // every publish waited for its ack; nothing is left to send

	db, err := startUp(ctx, cfg, js)
	if err != nil {
		return startErr(ctx, err)
	}
	defer db.Close()
	cfg.Metrics.SetReadiness(metrics.NATSConnected(nc), metrics.PostgresAnswers(db))

	o := handlerOptions(cfg, nc, js, db)
	o.Tracer = tracing.Tracer(tp)
	h, err := NewHandler(o)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, h)
}

// startUp opens and migrates the database, checks the client names and
// makes sure the STK stream exists, each retried for up to
// cfg.StartTimeout. On an error nothing is left open.
func startUp(ctx context.Context, cfg Config, js jetstream.JetStream) (*sqlx.DB, error) {
	log := cfg.Logger
	startCtx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	db, err := worker.RetryStart(startCtx, log, "open database", func(ctx context.Context) (*sqlx.DB, error) {
		return store.OpenMigrated(ctx, cfg.DatabaseURL)
	})
	if err != nil {
		return nil, err
	}
	if _, err := worker.RetryStart(startCtx, log, "check client names", func(ctx context.Context) (struct{}, error) {
		return struct{}{}, checkClientNames(ctx, store.New(db), cfg.Tokens)
	}); err != nil {
		_ = db.Close()
		return nil, err
	}
	if len(cfg.Tokens) == 0 {
		log.Info("API_TOKENS is empty: only the clients in the database (stkgate-admin) can authenticate")
	}
	// A configuration JetStream refuses ends start-up (worker.Refused).
	if _, err := worker.RetryStart(startCtx, log, "ensure stream", func(ctx context.Context) (jetstream.Stream, error) {
		return events.EnsureStream(ctx, js, cfg.StreamReplicas)
	}); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// handlerOptions are the Options of NewHandler for cfg.
func handlerOptions(cfg Config, nc *nats.Conn, js jetstream.JetStream, db *sqlx.DB) Options {
	return Options{
		Conn:         nc,
		JS:           js,
		Store:        store.New(db),
		Tokens:       cfg.Tokens,
		DispatchMode: cfg.DispatchMode,
		SyncTimeout:  cfg.SyncTimeout,
		Logger:       cfg.Logger,
		AccessLogger: cfg.AccessLogger,

		IdempotencyTTL: cfg.IdempotencyTTL,

		RateLimit:       cfg.RateLimit,
		RateBurst:       cfg.RateBurst,
		PhoneMaxPrompts: cfg.PhoneMaxPrompts,
		PhoneWindow:     cfg.PhoneWindow,

		AuthFailLimit:   cfg.AuthFailLimit,
		AuthFailBurst:   cfg.AuthFailBurst,
		TrustedProxies:  cfg.TrustedProxies,
		ClientMaxQueued: cfg.ClientMaxQueued,
		WebhookPolicy:   webhook.Policy{Dev: cfg.WebhookDevMode},

		Metrics: cfg.Metrics,
	}
}

// serve serves h on cfg.Addr, with the handler's background work (token
// refresh, purges), until ctx is cancelled.
func serve(ctx context.Context, cfg Config, h *Handler) error {
	log := cfg.Logger
	srv := newServer(cfg, h)
	srv.RegisterOnShutdown(h.StopWaiting)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	log.Info("api listening", "addr", ln.Addr().String(), "dispatch_mode", string(cfg.DispatchMode))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return service.Serve(gctx, srv, ln, shutdownTimeout) })
	g.Go(func() error {
		h.tokens.db.keepKnown(gctx)
		return nil
	})
	g.Go(func() error {
		purge(gctx, log, "expired idempotency keys", h.store.PurgeExpiredKeys)
		return nil
	})
	if cfg.PhoneMaxPrompts > 0 {
		g.Go(func() error {
			purge(gctx, log, "phone prompts older than PHONE_WINDOW", func(ctx context.Context, limit int) (int64, error) {
				return h.store.PurgePrompts(ctx, cfg.PhoneWindow, limit)
			})
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("api stopped")
	return nil
}

// connectNATS connects for publishing. A NATS that is down is waited for
// (RetryOnFailedConnect, endless reconnects), but nothing is buffered while
// disconnected: a publish then fails at once and the client gets its 503,
// instead of the request being sent later, after the client was told it
// was not accepted.
func connectNATS(url string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	return events.ConnectJetStream(url, "stkgate-api", log, nats.ReconnectBufSize(-1))
}

// startErr is nil when start-up was cut short by ctx: stopping before
// having started is a clean stop.
func startErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// newServer is the HTTP server of cfg (withDefaults applied) serving h.
func newServer(cfg Config, h http.Handler) *http.Server {
	rt := cmp.Or(cfg.ReadTimeout, serverReadTimeout)
	return &http.Server{
		Addr:              cfg.Addr,
		Handler:           h,
		ReadHeaderTimeout: cmp.Or(cfg.ReadHeaderTimeout, readHeaderTimeout),
		ReadTimeout:       rt,
		WriteTimeout:      rt + cfg.SyncTimeout + writeSlack,
		IdleTimeout:       cmp.Or(cfg.IdleTimeout, idleTimeout),
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
}

// MaxHeaderBytes bounds a request's headers (Go's default is 1 MiB): a
// client sends a token, a content type and an Idempotency-Key; more is
// refused with 431 before any of it is looked at.
const MaxHeaderBytes = 16 << 10

// How expired idempotency keys and old phone prompts are purged: every
// instance does it, which is harmless (SKIP LOCKED), in batches so that no
// statement holds locks long.
const (
	purgeInterval = 10 * time.Minute
	purgeBatch    = 1000
)

// purge deletes what (expired idempotency keys, old prompts) in batches
// now and every purgeInterval until ctx ends. Both are also ignored on use
// once out of date, so a purge that fails costs only disk space.
func purge(ctx context.Context, log *slog.Logger, what string, batch func(context.Context, int) (int64, error)) {
	t := time.NewTicker(purgeInterval)
	defer t.Stop()
	for {
		var total int64
		for ctx.Err() == nil {
			actx, cancel := context.WithTimeout(ctx, 30*time.Second)
			n, err := batch(actx, purgeBatch)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("purge "+what, "error", err)
				}
				break
			}
			total += n
			if n < purgeBatch {
				break
			}
		}
		if total > 0 {
			log.Info(what+" purged", "count", total)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
