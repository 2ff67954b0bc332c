// Package service is what the main function of every stkgate service binary
// does, in one place: a context cancelled by SIGINT or SIGTERM, the logger
// (JSON on stderr, text with LOG_FORMAT=text, each line naming the
// service), and exit codes that tell a bad configuration (2) from a service
// that failed (1).
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/stkgate/stkgate/events/kit/tracing"
)

// Exit codes of Main.
const (
	ExitFailed = 1 // the service could not start or stopped with an error
	ExitConfig = 2 // the configuration is missing or malformed
)

// NewLogger is the logger of the service name, writing to w: JSON, or
// text when format is "text".
func NewLogger(w io.Writer, format, name string) *slog.Logger {
	var h slog.Handler = slog.NewJSONHandler(w, nil)
	if format == "text" {
		h = slog.NewTextHandler(w, nil)
	}
	h = tracing.LogHandler(h) // trace_id and span_id on lines logged with a span's context
	return slog.New(h).With("service", name)
}

// configError marks an error of the configuration.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

// ConfigError marks err as the configuration's: Main prints it as it is
// (each problem on its line, naming the variable) and exits 2.
func ConfigError(err error) error {
	if err == nil {
		return nil
	}
	return configError{err}
}

// Main runs the service name until SIGINT or SIGTERM: run gets the context
// those cancel and the service's logger (also slog's default), reads its
// configuration, logs it (secrets masked by its LogValue) and runs. Main
// exits 2 when run returns a ConfigError, 1 for any other error, and
// returns when run returns nil.
func Main(name string, run func(ctx context.Context, log *slog.Logger) error) {
	if code := mainWith(name, os.Getenv, os.Stderr, run); code != 0 {
		os.Exit(code)
	}
}

// LogFormatEnv names the log format Main reads: "text" for text logs,
// anything else JSON.
const LogFormatEnv = "LOG_FORMAT"

// Settings are the variables Main reads itself, for every service, beside
// the service's own configuration.
func Settings() []string { return []string{LogFormatEnv, ProfileEnv} }

func mainWith(name string, getenv func(string) string, stderr io.Writer, run func(context.Context, *slog.Logger) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := NewLogger(stderr, getenv(LogFormatEnv), name)
	slog.SetDefault(log)
	if dir := getenv(ProfileEnv); dir != "" {
		stopProfile, err := StartProfile(dir, name)
		if err != nil {
			log.Error("cannot profile", "error", err, "dir", dir)
			return ExitFailed
		}
		defer stopProfile(log)
	}

	err := run(ctx, log)
	var ce configError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "%s: configuration:\n%v\n", name, ce.err)
		return ExitConfig
	default:
		log.Error(name+" failed", "error", err)
		return ExitFailed
	}
}
