// Command projector writes every STK event into the Postgres read model the
// api serves polls from. It is configured from the environment; see
// projector.ConfigFromEnv.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/stkgate/stkgate/api/projector"
	"github.com/stkgate/stkgate/events/kit/service"
)

func main() {
	service.Main("projector", func(ctx context.Context, log *slog.Logger) error {
		cfg, err := projector.ConfigFromEnv(os.Getenv)
		if err != nil {
			return service.ConfigError(err)
		}
		cfg.Logger = log
		log.Info("starting", "config", cfg)
		return projector.Run(ctx, cfg)
	})
}
