// Command webhooks delivers the STK events each client's webhook endpoints
// asked for, signed (docs/WEBHOOKS.md). It is configured from the
// environment; see webhooks.ConfigFromEnv, and WEBHOOKS_METRICS_ADDR for
// its metrics.
package main

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/stkgate/stkgate/dispatcher/webhooks"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/service"
)

func main() {
	service.Main("webhooks", func(ctx context.Context, log *slog.Logger) error {
		cfg, err := webhooks.ConfigFromEnv(os.Getenv)
		maddr, merr := metrics.AddrSetting(os.Getenv, "WEBHOOKS_METRICS_ADDR", metrics.DefaultWebhooksAddr)
		if err := errors.Join(err, merr); err != nil {
			return service.ConfigError(err)
		}
		cfg.Logger = log
		log.Info("starting", "config", cfg, "metrics_addr", maddr)
		return metrics.Run(ctx, maddr, "webhooks", log, func(ctx context.Context, reg *metrics.Registry) error {
			cfg.Metrics = reg
			return webhooks.Run(ctx, cfg)
		})
	})
}
