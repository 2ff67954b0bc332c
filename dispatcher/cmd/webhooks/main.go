// Command webhooks delivers the STK events each client's webhook endpoints
// asked for, signed (docs/WEBHOOKS.md). It is configured from the
// environment; see webhooks.ConfigFromEnv.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/stkgate/stkgate/dispatcher/webhooks"
	"github.com/stkgate/stkgate/events/kit/service"
)

func main() {
	service.Main("webhooks", func(ctx context.Context, log *slog.Logger) error {
		cfg, err := webhooks.ConfigFromEnv(os.Getenv)
		if err != nil {
			return service.ConfigError(err)
		}
		cfg.Logger = log
		log.Info("starting", "config", cfg)
		return webhooks.Run(ctx, cfg)
	})
}
