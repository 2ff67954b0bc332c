package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stkgate/stkgate/events/kit/envconf"
	"github.com/stkgate/stkgate/events/kit/service"
)

// Default admin addresses, on loopback: metrics say how much money moves,
// which is no one else's business. Off disables a service's admin server.
const (
	DefaultAPIAddr        = "127.0.0.1:9101"
	DefaultProjectorAddr  = "127.0.0.1:9102"
	DefaultDispatcherAddr = "127.0.0.1:9103"
	DefaultCallbackAddr   = "127.0.0.1:9104"
	DefaultWebhooksAddr   = "127.0.0.1:9105"
	Off                   = "off"
)

// AddrFromEnv reads the admin address setting name: host:port, or "off"
// (then ""); unset means def.
func AddrFromEnv(e *envconf.Env, name, def string) string {
	if e.Raw(name) == Off {
		return ""
	}
	return e.ListenAddr(name, def)
}

// Check is one readiness condition: nil when it holds. It must be cheap
// and honour ctx (checkTimeout).
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// AddrSetting is AddrFromEnv for a main that reads nothing else through
// envconf: the address, or the setting's error.
func AddrSetting(getenv func(string) string, name, def string) (string, error) {
	e := envconf.New(getenv)
	addr := AddrFromEnv(e, name, def)
	return addr, e.Err()
}

// checkTimeout bounds each readiness check.
const checkTimeout = 2 * time.Second

// NATSConnected is the check that nc is connected now; it asks nothing of
// the server (the client notices a lost server within its ping interval).
func NATSConnected(nc *nats.Conn) Check {
	return Check{Name: "nats", Func: func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("nats %s", nc.Status())
		}
		return nil
	}}
}

// Pinger is a database handle (*sql.DB, *sqlx.DB).
type Pinger interface {
	PingContext(ctx context.Context) error
}

// PostgresAnswers is the check that db answers a ping.
func PostgresAnswers(db Pinger) Check {
	return Check{Name: "postgres", Func: db.PingContext}
}

// readiness is what /readyz checks.
type readiness struct {
	mu     sync.Mutex
	checks []Check
}

// SetReadiness sets the checks /readyz runs, replacing any set before. A
// service sets them once every connection they check is open: until then
// it is not ready.
func (r *Registry) SetReadiness(checks ...Check) {
	if r == nil {
		return
	}
	r.ready.mu.Lock()
	r.ready.checks = checks
	r.ready.mu.Unlock()
}

// readyz answers 200 when every check holds, 503 naming each state
// otherwise (and before any check was set: the service is starting).
func (r *Registry) readyz(w http.ResponseWriter, req *http.Request) {
	r.ready.mu.Lock()
	checks := r.ready.checks
	r.ready.mu.Unlock()
	body := map[string]string{}
	ready := len(checks) > 0
	if !ready {
		body["reason"] = "starting"
	}
	for _, c := range checks {
		ctx, cancel := context.WithTimeout(req.Context(), checkTimeout)
		err := c.Func(ctx)
		cancel()
		if err != nil {
			ready = false
			body[c.Name] = "unreachable"
			continue
		}
		body[c.Name] = "ok"
	}
	code := http.StatusOK
	body["status"] = "ready"
	if !ready {
		code = http.StatusServiceUnavailable
		body["status"] = "not ready"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// AdminHandler serves /metrics, /healthz (the process answers) and
// /readyz (SetReadiness's checks hold).
func (r *Registry) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", r.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", r.readyz)
	return mux
}

// Admin timeouts: a scrape is a small request and a quick answer.
const (
	adminReadTimeout  = 5 * time.Second
	adminWriteTimeout = 30 * time.Second
	adminGrace        = 5 * time.Second
)

// Listen opens the admin address addr.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	return ln, nil
}

// ServeAdmin serves r's admin handler on ln until ctx ends.
func (r *Registry) ServeAdmin(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           r.AdminHandler(),
		ReadHeaderTimeout: adminReadTimeout,
		ReadTimeout:       adminReadTimeout,
		WriteTimeout:      adminWriteTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("metrics listening", "addr", ln.Addr().String())
	return service.Serve(ctx, srv, ln, adminGrace)
}

// Run runs run with a Registry for service, serving its admin handler on
// addr beside it, until run returns (then the admin server stops) or the
// admin server fails (then run's context ends). With addr empty metrics
// are off: run gets a nil Registry.
func Run(ctx context.Context, addr, service string, log *slog.Logger, run func(ctx context.Context, reg *Registry) error) error {
	if addr == "" {
		return run(ctx, nil)
	}
	ln, err := Listen(addr)
	if err != nil {
		return err
	}
	reg := New(service)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	adminCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() {
		err := reg.ServeAdmin(adminCtx, ln, log)
		if err != nil {
			cancel(err)
		}
		served <- err
	}()
	runErr := run(ctx, reg)
	stopAdmin()
	adminErr := <-served
	if runErr == nil && adminErr != nil {
		return fmt.Errorf("metrics server: %w", adminErr)
	}
	return runErr
}
