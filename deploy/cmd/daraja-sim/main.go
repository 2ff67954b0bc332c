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
// taken by it. Both listen on loopback unless told otherwise. POST /scripts
// on the control port scripts phones (see ScriptRequest): their first pushes
// fail in the ways Daraja and its gateway fail, or their callbacks are lost.
// POST /oauth-faults (see OAuthFaultRequest) makes the next token requests
// fail, as after a rotated consumer secret or behind a firewall.
//
// -answer-latency (DARAJA_SIM_ANSWER_LATENCY) holds each push's answer for a
// random time up to it after Daraja has processed the push, as the real
// Daraja takes a second or more to answer: a dispatcher that dies in that
// window has prompted the customer without knowing it.
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
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
)

// ScriptRequest is one element of the JSON array POST /scripts takes.
type ScriptRequest struct {
	Phone      string   `json:"phone"`       // 254XXXXXXXXX
	ResultCode string   `json:"result_code"` // "" means darajatest.OutcomeFor
	FailFirst  []string `json:"fail_first"`  // darajatest.Failure names, e.g. "timeout-after-accept"
	NoCallback bool     `json:"no_callback"` // the outcome is final but its callback is never sent
}

// OAuthFaultRequest is the body of POST /oauth-faults.
type OAuthFaultRequest struct {
	Count int    `json:"count"` // token requests to fail; 0 ends an earlier fault
	Kind  string `json:"kind"`  // "empty-400", "html-403" or "service-unavailable"
}

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
	latencyText := flag.String("answer-latency", env("DARAJA_SIM_ANSWER_LATENCY", "0s"), "longest random hold of a push's answer after it was processed (DARAJA_SIM_ANSWER_LATENCY)")
	flag.Parse()
	latency, err := time.ParseDuration(*latencyText)
	if err != nil || latency < 0 {
		return fmt.Errorf("DARAJA_SIM_ANSWER_LATENCY: %q is not a duration like 500ms", *latencyText)
	}

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

	simAddr := *addr
	if latency > 0 {
		simAddr = "127.0.0.1:0" // behind the latency proxy below
	}
	sim, err := darajatest.NewServer(darajatest.Options{Addr: simAddr, CallbackDelay: delay, Logger: log})
	if err != nil {
		return err
	}
	defer func() { _ = sim.Close() }()
	url := sim.URL()
	if latency > 0 {
		if url, err = latencyProxy(ctx, *addr, sim.URL(), latency); err != nil {
			return err
		}
	}

	ln, err := net.Listen("tcp", *control)
	if err != nil {
		return fmt.Errorf("control listen: %w", err)
	}
	srv := &http.Server{Handler: controlHandler(sim), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	fmt.Printf("daraja-sim ready url=%s control=http://%s\n", url, ln.Addr())
	log.Info("started", "url", url, "control", "http://"+ln.Addr().String(), "callback_delay", delay, "answer_latency", latency)

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

// controlHandler serves the control port: GET /recordings, POST /scripts
// and POST /oauth-faults.
func controlHandler(sim *darajatest.Server) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /recordings", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Recordings{Pushes: sim.Pushes(), Queries: sim.Queries(), Callbacks: sim.Callbacks()})
	})
	mux.HandleFunc("POST /scripts", func(w http.ResponseWriter, r *http.Request) {
		var reqs []ScriptRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<20)).Decode(&reqs); err != nil {
			http.Error(w, "want a JSON array of scripts: "+err.Error(), http.StatusBadRequest)
			return
		}
		scripts := make(map[string]darajatest.Script, len(reqs))
		for _, q := range reqs {
			sc := darajatest.Script{ResultCode: q.ResultCode, NoCallback: q.NoCallback}
			for _, name := range q.FailFirst {
				f, err := darajatest.ParseFailure(name)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				sc.FailFirst = append(sc.FailFirst, f)
			}
			scripts[q.Phone] = sc
		}
		for phone, sc := range scripts {
			sim.Script(phone, sc)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /oauth-faults", func(w http.ResponseWriter, r *http.Request) {
		var q OAuthFaultRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&q); err != nil {
			http.Error(w, `want {"count":N,"kind":"empty-400"}: `+err.Error(), http.StatusBadRequest)
			return
		}
		if err := darajatest.CheckOAuthFault(q.Kind); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sim.FailOAuth(q.Count, q.Kind)
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// latencyProxy serves addr, forwarding to target and holding the answer of
// every push for a random time up to max after target has processed it.
func latencyProxy(ctx context.Context, addr, target string, max time.Duration) (string, error) {
	u, err := neturl.Parse(target)
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path == daraja.PathPush {
			time.Sleep(rand.N(max))
		}
		return nil
	}
	// Daraja's answer never came (a scripted reset or hang): the caller
	// must see a reset, as without the proxy, not a 502 from it.
	proxy.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = conn.Close()
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return "http://" + ln.Addr().String(), nil
}
