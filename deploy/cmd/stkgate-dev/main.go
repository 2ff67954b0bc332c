// Command stkgate-dev runs the whole of stkgate in one process for
// development: `make run`. See the README for what it starts.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/stkgate/stkgate/deploy/devstack"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var h slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})
	if os.Getenv("LOG_FORMAT") == "json" {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	h = tracing.LogHandler(h)
	log := slog.New(h)
	slog.SetDefault(log)

	if err := devstack.Run(ctx, devstack.Options{Logger: log, Metrics: true}); err != nil {
		fmt.Fprintln(os.Stderr, "stkgate-dev:", err)
		os.Exit(1)
	}
}
