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
// text when format is "text". The JSON lines are slog's JSONHandler's,
// the plain ones written by hand (jsonHandler).
func NewLogger(w io.Writer, format, name string) *slog.Logger {
	var h slog.Handler = newJSONHandler(w)
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
	MainLogs(name, func(ctx context.Context, logs Loggers) error { return run(ctx, logs.Log) })
}

// Loggers are a service's loggers, writing to the same stderr: Log writes
// each line at once; Access holds its lines (LineWriter) for up to
// AccessFlushInterval, and writes them before any line of Log and when the
// service stops. Access is for lines that may be lost if the process dies
// (SIGKILL, a crash): one line per HTTP request answered, never a line
// that stands for a payment (accepted, published, failed).
type Loggers struct {
	Log, Access *slog.Logger
}

// MainLogs is Main whose run gets both loggers.
func MainLogs(name string, run func(ctx context.Context, logs Loggers) error) {
	if code := mainLogs(name, os.Getenv, os.Stderr, run); code != 0 {
		os.Exit(code)
	}
}

// LogFormatEnv names the log format Main reads: "text" for text logs,
// anything else JSON.
const LogFormatEnv = "LOG_FORMAT"

// Settings are the variables Main reads itself, for every service, beside
// the service's own configuration.
func Settings() []string { return []string{LogFormatEnv, ProfileEnv} }

// accessFlushInterval is AccessFlushInterval; a test lengthens it.
var accessFlushInterval = AccessFlushInterval

func mainWith(name string, getenv func(string) string, stderr io.Writer, run func(context.Context, *slog.Logger) error) int {
	return mainLogs(name, getenv, stderr, func(ctx context.Context, logs Loggers) error { return run(ctx, logs.Log) })
}

func mainLogs(name string, getenv func(string) string, stderr io.Writer, run func(context.Context, Loggers) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lines := NewLineWriter(stderr, accessFlushInterval, AccessBufferBytes)
	defer lines.Close() // after every other deferred line: the held ones are written last
	log := NewLogger(lines, getenv(LogFormatEnv), name)
	logs := Loggers{Log: log, Access: NewLogger(lines.Buffered(), getenv(LogFormatEnv), name)}
	slog.SetDefault(log)
	if dir := getenv(ProfileEnv); dir != "" {
		stopProfile, err := StartProfile(dir, name)
		if err != nil {
			log.Error("cannot profile", "error", err, "dir", dir)
			return ExitFailed
		}
		defer stopProfile(log)
	}

	err := run(ctx, logs)
	var ce configError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ce):
		_ = lines.Close() // the held lines before the configuration's errors
		fmt.Fprintf(stderr, "%s: configuration:\n%v\n", name, ce.err)
		return ExitConfig
	default:
		log.Error(name+" failed", "error", err)
		return ExitFailed
	}
}
