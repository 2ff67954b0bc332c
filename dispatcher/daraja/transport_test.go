package daraja_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
)

// closedAddr is an address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// hangUp reads the request, then closes the connection without answering.
func hangUp(w http.ResponseWriter, r *http.Request) {
	_, _ = io.ReadAll(r.Body)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0) // reset, not a graceful close
	}
	conn.Close()
}

// hangUpGracefully reads the request, then closes the connection (FIN).
func hangUpGracefully(w http.ResponseWriter, r *http.Request) {
	_, _ = io.ReadAll(r.Body)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

// stall reads the request and never answers, until released.
func stall(release <-chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}
}

// noSuchHost fails a dial as the resolver does for an unknown name.
func noSuchHost(_ context.Context, network, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
}

func TestTransportErrors(t *testing.T) {
	release := make(chan struct{})
	tests := []struct {
		name    string
		base    func(t *testing.T) string
		timeout time.Duration
		client  *http.Client
		kind    daraja.Kind
		code    string
		sent    bool
	}{
		{
			name: "connection refused",
			base: func(t *testing.T) string { return "http://" + closedAddr(t) },
			kind: daraja.KindTransient, code: daraja.CodeUnreachable,
		},
		{
			// The resolver's answer is played by the dialer: the machine's
			// DNS server may be slow or absent, and the test must not wait on it.
			name:   "dns failure",
			base:   func(t *testing.T) string { return "http://stkgate-test.invalid" },
			client: &http.Client{Transport: &http.Transport{DialContext: noSuchHost}},
			kind:   daraja.KindTransient, code: daraja.CodeUnreachable,
		},
		{
			name: "tls handshake refused",
			base: func(t *testing.T) string {
				s := httptest.NewTLSServer(replyJSON(200, fixture(t, "push-accepted.json")))
				t.Cleanup(s.Close)
				return s.URL // its certificate is not trusted by the default client
			},
			kind: daraja.KindTransient, code: daraja.CodeUnreachable,
		},
		{
			name: "reset after reading the request",
			base: func(t *testing.T) string { return newStub(t, nil, hangUp).URL },
			kind: daraja.KindAmbiguous, code: daraja.CodeConnectionLost, sent: true,
		},
		{
			name: "closed after reading the request",
			base: func(t *testing.T) string { return newStub(t, nil, hangUpGracefully).URL },
			kind: daraja.KindAmbiguous, code: daraja.CodeConnectionLost, sent: true,
		},
		{
			name: "no answer in time",
			base: func(t *testing.T) string {
				s := newStub(t, nil, stall(release))
				return s.URL
			},
			timeout: 300 * time.Millisecond,
			kind:    daraja.KindAmbiguous, code: daraja.CodeTimeout, sent: true,
		},
	}
	t.Cleanup(func() { close(release) })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(tt.base(t))
			if tt.timeout != 0 {
				cfg.Timeout = tt.timeout
			}
			if tt.client != nil {
				cfg.HTTPClient = tt.client
			}
			c := newClient(t, cfg)
			// Where nothing answers at all, the OAuth call fails first and
			// the push is reported as never sent.
			_, err := c.Push(context.Background(), validPush())
			e := asError(t, err)
			if e.Kind != tt.kind || daraja.KindOf(err) != tt.kind {
				t.Errorf("Kind %v, want %v: %v", e.Kind, tt.kind, err)
			}
			if e.Code != tt.code {
				t.Errorf("Code %q, want %q: %v", e.Code, tt.code, err)
			}
			if e.HTTPStatus != 0 {
				t.Errorf("HTTPStatus %d", e.HTTPStatus)
			}
			if tt.sent != e.RequestSent && tt.code != daraja.CodeUnreachable {
				t.Errorf("RequestSent %v, want %v", e.RequestSent, tt.sent)
			}
			if errors.Is(err, context.Canceled) {
				t.Errorf("error %v claims a cancellation", err)
			}
			noSecrets(t, err.Error())
		})
	}
}

// TestPushUnreachableAfterToken: the token was fetched, then Daraja became
// unreachable: the push was never sent.
func TestPushUnreachableAfterToken(t *testing.T) {
	s := newStub(t, nil, replyJSON(200, fixture(t, "push-accepted.json")))
	cfg := testConfig(s.URL)
	// A fresh connection per request: a request written on a kept-alive
	// connection that the server has just closed is (rightly) ambiguous.
	cfg.HTTPClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	c := newClient(t, cfg)
	if _, err := c.Push(context.Background(), validPush()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := c.Push(context.Background(), validPush())
	e := asError(t, err)
	if e.Kind != daraja.KindTransient || e.Code != daraja.CodeUnreachable || e.RequestSent {
		t.Errorf("after the server went away: %v (sent %v)", err, e.RequestSent)
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Errorf("error %v does not wrap the transport error", err)
	}
}

func TestCallerCancellation(t *testing.T) {
	// Each stalled handler is released in a cleanup registered after the
	// stub's, so it runs before the stub's Close (cleanups run last first).

	t.Run("while the push is in flight", func(t *testing.T) {
		release := make(chan struct{})
		s := newStub(t, nil, stall(release))
		t.Cleanup(func() { close(release) })
		c := newClient(t, testConfig(s.URL))
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for s.apiCalls.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		_, err := c.Push(ctx, validPush())
		e := asError(t, err)
		if e.Kind != daraja.KindCanceled || e.Code != daraja.CodeCanceled || !e.RequestSent {
			t.Errorf("error %v: kind %v, sent %v; want canceled after sending", err, e.Kind, e.RequestSent)
		}
		if !errors.Is(err, context.Canceled) || daraja.KindOf(err) != daraja.KindCanceled {
			t.Errorf("error %v: errors.Is(Canceled) %v, KindOf %v", err, errors.Is(err, context.Canceled), daraja.KindOf(err))
		}
	})

	t.Run("while waiting for the token", func(t *testing.T) {
		release := make(chan struct{})
		s := newStub(t, stall(release), replyJSON(200, fixture(t, "push-accepted.json")))
		t.Cleanup(func() { close(release) })
		c := newClient(t, testConfig(s.URL))
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for s.oauthCalls.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		_, err := c.Push(ctx, validPush())
		e := asError(t, err)
		if e.Kind != daraja.KindCanceled || e.RequestSent || !errors.Is(err, context.Canceled) {
			t.Errorf("error %v: kind %v, sent %v", err, e.Kind, e.RequestSent)
		}
		if n := s.apiCalls.Load(); n != 0 {
			t.Errorf("%d pushes sent", n)
		}
	})

	t.Run("caller deadline before the token", func(t *testing.T) {
		release := make(chan struct{})
		s := newStub(t, stall(release), replyJSON(200, fixture(t, "push-accepted.json")))
		t.Cleanup(func() { close(release) })
		c := newClient(t, testConfig(s.URL))
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := c.Push(ctx, validPush())
		// A deadline is a timeout, not a cancellation: the push was not
		// sent, so it may be tried again.
		if k := daraja.KindOf(err); k != daraja.KindTransient {
			t.Errorf("KindOf(%v) = %v, want transient", err, k)
		}
	})

	t.Run("caller deadline after sending", func(t *testing.T) {
		release := make(chan struct{})
		s := newStub(t, nil, stall(release))
		t.Cleanup(func() { close(release) })
		c := newClient(t, testConfig(s.URL))
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := c.Push(ctx, validPush())
		e := asError(t, err)
		if e.Kind != daraja.KindAmbiguous || e.Code != daraja.CodeTimeout || !e.RequestSent {
			t.Errorf("error %v: kind %v, sent %v; want ambiguous timeout", err, e.Kind, e.RequestSent)
		}
	})
}

func TestKindOfPlainErrors(t *testing.T) {
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	readErr := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	tests := []struct {
		err  error
		want daraja.Kind
	}{
		{&url.Error{Op: "Post", URL: "https://x", Err: dialErr}, daraja.KindTransient},
		{&url.Error{Op: "Post", URL: "https://x", Err: &net.DNSError{Err: "no such host", Name: "x"}}, daraja.KindTransient},
		{&url.Error{Op: "Post", URL: "https://x", Err: readErr}, daraja.KindAmbiguous},
		{context.Canceled, daraja.KindCanceled},
		{&url.Error{Op: "Post", URL: "https://x", Err: context.DeadlineExceeded}, daraja.KindAmbiguous},
		{errors.New("something"), daraja.KindAmbiguous},
		{nil, daraja.KindAmbiguous},
		{&daraja.Error{Kind: daraja.KindLocked}, daraja.KindLocked},
		{errors.Join(errors.New("wrapped"), &daraja.Error{Kind: daraja.KindRefused}), daraja.KindRefused},
	}
	for _, tt := range tests {
		if got := daraja.KindOf(tt.err); got != tt.want {
			t.Errorf("KindOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	for k, want := range map[daraja.Kind]string{daraja.KindRefused: "refused", daraja.KindTransient: "transient",
		daraja.KindLocked: "locked", daraja.KindAmbiguous: "ambiguous", daraja.KindCanceled: "canceled"} {
		if k.String() != want || !strings.Contains((&daraja.Error{Op: "push", Kind: k}).Error(), want) {
			t.Errorf("Kind %d reads %q", int(k), k.String())
		}
	}
}
