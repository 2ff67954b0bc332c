// Command api serves stkgate's HTTP API: clients ask for STK pushes and poll
// for their outcome. It is configured from the environment; see
// api.ConfigFromEnv.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/stkgate/stkgate/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var h slog.Handler = slog.NewJSONHandler(os.Stderr, nil)
	if os.Getenv("LOG_FORMAT") == "text" {
		h = slog.NewTextHandler(os.Stderr, nil)
	}
	log := slog.New(h).With("service", "api")
	slog.SetDefault(log)

	cfg, err := api.ConfigFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(2)
	}
	cfg.Logger = log
	log.Info("starting", "config", cfg)

	if err := api.Run(ctx, cfg); err != nil {
		log.Error("api failed", "error", err)
		os.Exit(1)
	}
}
