// Command callback-ingest receives Safaricom's STK push callbacks, keeps
// each one raw in the STK_CALLBACKS stream, and publishes each outcome as an
// stk.completed event.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	callback "github.com/stkgate/stkgate/callback-ingest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var h slog.Handler = slog.NewJSONHandler(os.Stderr, nil)
	if os.Getenv("LOG_FORMAT") == "text" {
		h = slog.NewTextHandler(os.Stderr, nil)
	}
	log := slog.New(h).With("service", "callback-ingest")
	slog.SetDefault(log)

	cfg, err := callback.ConfigFromEnv(os.Getenv)
	if err != nil {
		log.Error("configuration", "err", err)
		os.Exit(2)
	}
	cfg.Logger = log
	log.Info("starting", "config", cfg)
	if err := callback.Run(ctx, cfg); err != nil {
		log.Error("callback-ingest failed", "err", err)
		os.Exit(1)
	}
}
