// Command callback-ingest receives Safaricom's STK push callbacks, keeps
// each one raw in the STK_CALLBACKS stream, and publishes each outcome as an
// stk.completed event. CALLBACK_METRICS_ADDR is where its metrics are.
package main

import (
	"context"
	"errors"
	"log/slog"
	"os"

	callback "github.com/stkgate/stkgate/callback-ingest"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/service"
)

func main() {
	service.Main("callback-ingest", func(ctx context.Context, log *slog.Logger) error {
		cfg, err := callback.ConfigFromEnv(os.Getenv)
		maddr, merr := metrics.AddrSetting(os.Getenv, "CALLBACK_METRICS_ADDR", metrics.DefaultCallbackAddr)
		if err := errors.Join(err, merr); err != nil {
			return service.ConfigError(err)
		}
		cfg.Logger = log
		log.Info("starting", "config", cfg, "metrics_addr", maddr)
		return metrics.Run(ctx, maddr, "callback-ingest", log, func(ctx context.Context, reg *metrics.Registry) error {
			cfg.Metrics = reg
			return callback.Run(ctx, cfg)
		})
	})
}
