// Command api serves stkgate's HTTP API: clients ask for STK pushes and poll
// for their outcome. It is configured from the environment; see
// api.ConfigFromEnv, and API_METRICS_ADDR for its metrics.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/stkgate/stkgate/api"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/service"
)

func main() {
	service.MainLogs("api", func(ctx context.Context, logs service.Loggers) error {
		log := logs.Log
		cfg, err := api.ConfigFromEnv(os.Getenv)
		maddr, merr := metrics.AddrSetting(os.Getenv, "API_METRICS_ADDR", metrics.DefaultAPIAddr)
		if err := errors.Join(err, merr); err != nil {
			return service.ConfigError(err)
		}
		cfg.Logger, cfg.AccessLogger = log, logs.Access
		log.Info("starting", "config", cfg, "metrics_addr", maddr)
		return metrics.Run(ctx, maddr, "api", log, func(ctx context.Context, reg *metrics.Registry) error {
			cfg.Metrics = reg
			return api.Run(ctx, cfg)
		})
	})
}
