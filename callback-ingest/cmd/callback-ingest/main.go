// Command callback-ingest receives Safaricom's STK push callbacks, keeps
// each one raw in the STK_CALLBACKS stream, and publishes each outcome as an
// stk.completed event.
package main

import (
	"context"
	"log/slog"
	"os"

	callback "github.com/stkgate/stkgate/callback-ingest"
	"github.com/stkgate/stkgate/events/kit/service"
)

func main() {
	service.Main("callback-ingest", func(ctx context.Context, log *slog.Logger) error {
		cfg, err := callback.ConfigFromEnv(os.Getenv)
		if err != nil {
			return service.ConfigError(err)
		}
		cfg.Logger = log
		log.Info("starting", "config", cfg)
		return callback.Run(ctx, cfg)
	})
}
