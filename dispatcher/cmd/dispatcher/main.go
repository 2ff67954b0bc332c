// Command dispatcher sends an STK push to Daraja for each stk.requested event,
// and runs the reconciler, which brings every accepted payment to a final
// state. It is configured from the environment; see dispatcher.ConfigFromEnv
// and reconciler.ConfigFromEnv.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/stkgate/stkgate/dispatcher"
	"github.com/stkgate/stkgate/dispatcher/reconciler"
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
	rcfg, err := reconciler.ConfigFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "reconciler: configuration:\n%v\n", err)
		os.Exit(2)
	}
	cfg.Logger = log
	rcfg.Logger = log.With("component", "reconciler")
	log.Info("starting", "config", cfg, "reconciler", rcfg)

	// Either failing to start stops the other: a dispatcher without its
	// reconciler could leave payments unfinished.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return dispatcher.Run(gctx, cfg) })
	g.Go(func() error { return reconciler.Run(gctx, rcfg) })
	if err := g.Wait(); err != nil {
		log.Error("dispatcher failed", "error", err)
		os.Exit(1)
	}
}
