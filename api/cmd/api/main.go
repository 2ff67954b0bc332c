// Command api serves stkgate's HTTP API: clients ask for STK pushes and poll
// for their outcome. It is configured from the environment; see
// api.ConfigFromEnv.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/stkgate/stkgate/api"
	"github.com/stkgate/stkgate/events/kit/service"
)

func main() {
	service.Main("api", func(ctx context.Context, log *slog.Logger) error {
		cfg, err := api.ConfigFromEnv(os.Getenv)
		if err != nil {
			return service.ConfigError(err)
		}
		cfg.Logger = log
		log.Info("starting", "config", cfg)
		return api.Run(ctx, cfg)
	})
}
