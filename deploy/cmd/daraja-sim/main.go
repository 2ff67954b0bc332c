// Command daraja-sim runs the fake Daraja (darajatest) as a process of its
// own, so that fault tests can kill every stkgate service around it while
// it keeps counting what it was sent.
//
// It serves Daraja's OAuth, STK push and STK query endpoints on -addr
// (DARAJA_SIM_ADDR) and sends each accepted push's callback after
// -callback-delay (DARAJA_SIM_DELAY; 0 means at once). On a second address,
// -control-addr (DARAJA_SIM_CONTROL_ADDR), GET /recordings answers what the
// fake has recorded as JSON (see Recordings): every push with its
// CallBackURL, which pushes Daraja accepted, every query, and every callback
// delivered with the status its receiver answered. The control port is kept
// apart from the Daraja port so that no path the real Daraja could serve is
// taken by it. Both listen on loopback unless told otherwise.
//
// Once both are listening it prints one line to stdout:
//
//	daraja-sim ready url=http://127.0.0.1:P control=http://127.0.0.1:Q
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
)

// Recordings is the body of GET /recordings.
type Recordings struct {
	Pushes    []darajatest.Push             `json:"pushes"`
	Queries   []darajatest.Query            `json:"queries"`
	Callbacks []darajatest.CallbackDelivery `json:"callbacks"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "daraja-sim: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	env := func(k, def string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return def
	}
	addr := flag.String("addr", env("DARAJA_SIM_ADDR", "127.0.0.1:0"), "Daraja listen address (DARAJA_SIM_ADDR)")
	control := flag.String("control-addr", env("DARAJA_SIM_CONTROL_ADDR", "127.0.0.1:0"), "address of GET /recordings (DARAJA_SIM_CONTROL_ADDR)")
	delayText := flag.String("callback-delay", env("DARAJA_SIM_DELAY", "3s"), "time from an accepted push to its callback; 0 means at once (DARAJA_SIM_DELAY)")
	flag.Parse()

	delay, err := time.ParseDuration(*delayText)
	if err != nil || delay < 0 {
		return fmt.Errorf("DARAJA_SIM_DELAY: %q is not a duration like 3s", *delayText)
	}
	if delay == 0 {
		delay = -1 // darajatest reads zero as its default and a negative delay as "at once"
	}

	var h slog.Handler = slog.NewJSONHandler(os.Stderr, nil)
	if os.Getenv("LOG_FORMAT") == "text" {
		h = slog.NewTextHandler(os.Stderr, nil)
	}
	log := slog.New(h).With("service", "daraja-sim")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	sim, err := darajatest.NewServer(darajatest.Options{Addr: *addr, CallbackDelay: delay, Logger: log})
	if err != nil {
		return err
	}
	defer func() { _ = sim.Close() }()

	ln, err := net.Listen("tcp", *control)
	if err != nil {
		return fmt.Errorf("control listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /recordings", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Recordings{Pushes: sim.Pushes(), Queries: sim.Queries(), Callbacks: sim.Callbacks()})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	fmt.Printf("daraja-sim ready url=%s control=http://%s\n", sim.URL(), ln.Addr())
	log.Info("started", "url", sim.URL(), "control", "http://"+ln.Addr().String(), "callback_delay", delay)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("control server: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}
