// Command dispatcher sends an STK push to Daraja for each stk.requested event,
// and runs the reconciler, which brings every accepted payment to a final
// state. It is configured from the environment; see dispatcher.ConfigFromEnv
// and reconciler.ConfigFromEnv, and DISPATCHER_METRICS_ADDR for the metrics
// of both.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sync/errgroup"

	"github.com/stkgate/stkgate/dispatcher"
	"github.com/stkgate/stkgate/dispatcher/reconciler"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/service"
)

func main() {
	service.Main("dispatcher", func(ctx context.Context, log *slog.Logger) error {
		cfg, err := dispatcher.ConfigFromEnv(os.Getenv)
		if err != nil {
			err = fmt.Errorf("dispatcher: %w", err)
		}
		rcfg, rerr := reconciler.ConfigFromEnv(os.Getenv)
		if rerr != nil {
			rerr = fmt.Errorf("reconciler: %w", rerr)
		}
		maddr, merr := metrics.AddrSetting(os.Getenv, "DISPATCHER_METRICS_ADDR", metrics.DefaultDispatcherAddr)
		if err := errors.Join(err, rerr, merr); err != nil {
			return service.ConfigError(err)
		}
		cfg.Logger = log
		rcfg.Logger = log.With("component", "reconciler")
		log.Info("starting", "config", cfg, "reconciler", rcfg, "metrics_addr", maddr)

		return metrics.Run(ctx, maddr, "dispatcher", log, func(ctx context.Context, reg *metrics.Registry) error {
			cfg.Metrics, rcfg.Metrics = reg, reg
			// Either failing to start stops the other: a dispatcher
			// without its reconciler could leave payments unfinished.
			g, gctx := errgroup.WithContext(ctx)
			g.Go(func() error { return dispatcher.Run(gctx, cfg) })
			g.Go(func() error { return reconciler.Run(gctx, rcfg) })
			return g.Wait()
		})
	})
}
