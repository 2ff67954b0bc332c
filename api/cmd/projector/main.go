// Command projector writes every STK event into the Postgres read model the
// api serves polls from. It is configured from the environment; see
// projector.ConfigFromEnv, and PROJECTOR_METRICS_ADDR for its metrics.
package main

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/stkgate/stkgate/api/projector"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/service"
)

func main() {
	service.Main("projector", func(ctx context.Context, log *slog.Logger) error {
		cfg, err := projector.ConfigFromEnv(os.Getenv)
		maddr, merr := metrics.AddrSetting(os.Getenv, "PROJECTOR_METRICS_ADDR", metrics.DefaultProjectorAddr)
		if err := errors.Join(err, merr); err != nil {
			return service.ConfigError(err)
		}
		cfg.Logger = log
		log.Info("starting", "config", cfg, "metrics_addr", maddr)
		return metrics.Run(ctx, maddr, "projector", log, func(ctx context.Context, reg *metrics.Registry) error {
			cfg.Metrics = reg
			return projector.Run(ctx, cfg)
		})
	})
}
