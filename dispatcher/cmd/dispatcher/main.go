// Command dispatcher sends an STK push to Daraja for each stk.requested event.
// It is configured from the environment; see dispatcher.ConfigFromEnv.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/stkgate/stkgate/dispatcher"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var h slog.Handler = slog.NewJSONHandler(os.Stderr, nil)
	if os.Getenv("LOG_FORMAT") == "text" {
		h = slog.NewTextHandler(os.Stderr, nil)
	}
	log := slog.New(h).With("service", "dispatcher")
	slog.SetDefault(log)

	cfg, err := dispatcher.ConfigFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dispatcher: configuration:\n%v\n", err)
		os.Exit(2)
	}
	cfg.Logger = log
	log.Info("starting", "config", cfg)

	if err := dispatcher.Run(ctx, cfg); err != nil {
		log.Error("dispatcher failed", "error", err)
		os.Exit(1)
	}
}
