package binaries

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// maxBalancedBody bounds a request body the balancer holds to send again:
// stkgate's requests and Daraja's callbacks are a few kilobytes.
const maxBalancedBody = 1 << 20

// Balancer is the load balancer in front of several instances of one
// service: each request goes to the next backend in turn, and to the one
// after it when a backend refuses the connection (down, or draining after
// SIGTERM, whose listener is closed). A request that reached a backend is
// never sent again: its answer, or the lost connection, is the client's,
// as behind a real balancer, so a non-idempotent request cannot be made
// twice by the balancer.
type Balancer struct {
	backends []string // host:port
	next     atomic.Uint64
	dialer   net.Dialer
	srv      *http.Server
	ln       net.Listener
}

// Balance listens on a loopback port and spreads the requests it gets over
// backends (host:port each). URL is where it listens; Close stops it.
func Balance(backends ...string) (*Balancer, error) {
	if len(backends) == 0 {
		return nil, errors.New("balance: no backend")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("balance: %w", err)
	}
	b := &Balancer{backends: backends, ln: ln, dialer: net.Dialer{Timeout: time.Second}}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	return b, nil
}

// URL is the balancer's base URL.
func (b *Balancer) URL() string { return "http://" + b.ln.Addr().String() }

// Close stops the balancer.
func (b *Balancer) Close() error { return b.srv.Close() }

func (b *Balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBalancedBody+1))
	if err != nil || len(body) > maxBalancedBody {
		http.Error(w, "balancer: body unreadable or too large", http.StatusBadRequest)
		return
	}
	first := int(b.next.Add(1) - 1)
	var last error
	for k := range b.backends {
		backend := b.backends[(first+k)%len(b.backends)]
		conn, err := b.dialer.DialContext(r.Context(), "tcp", backend)
		if err != nil {
			last = err // refused: nothing was sent, the next backend may take it
			continue
		}
		b.forward(w, r, body, backend, conn)
		return
	}
	http.Error(w, fmt.Sprintf("balancer: no backend answers: %v", last), http.StatusBadGateway)
}

// forward sends the request on conn, a connection of its own (no reuse, so
// that a backend's drain never meets a kept-alive connection of ours), and
// copies the answer back. Only the first status and body are the client's:
// a failure after the connection was made is answered 502, never retried.
func (b *Balancer) forward(w http.ResponseWriter, r *http.Request, body []byte, backend string, conn net.Conn) {
	var once atomic.Bool
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if once.Swap(true) {
				return nil, errors.New("balancer: one connection per request")
			}
			return conn, nil
		},
	}
	defer tr.CloseIdleConnections()
	out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+backend+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		conn.Close()
		http.Error(w, "balancer: "+err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.Host = r.Host
	resp, err := tr.RoundTrip(out)
	if err != nil {
		conn.Close()
		http.Error(w, "balancer: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
