// Command projector writes every STK event into the Postgres read model the
// api serves polls from. It is configured from the environment; see
// projector.ConfigFromEnv.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/stkgate/stkgate/api/projector"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var h slog.Handler = slog.NewJSONHandler(os.Stderr, nil)
	if os.Getenv("LOG_FORMAT") == "text" {
		h = slog.NewTextHandler(os.Stderr, nil)
	}
	log := slog.New(h).With("service", "projector")
	slog.SetDefault(log)

	cfg, err := projector.ConfigFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "projector:", err)
		os.Exit(2)
	}
	cfg.Logger = log
	log.Info("starting", "config", cfg)

	if err := projector.Run(ctx, cfg); err != nil {
		log.Error("projector failed", "error", err)
		os.Exit(1)
	}
}
