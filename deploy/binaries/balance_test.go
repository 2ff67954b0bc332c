package binaries

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// A refused connection moves the request to the next backend, body and
// all; a request that reached a backend is never sent again, whatever
// became of it.
func TestBalancer(t *testing.T) {
	var got atomic.Int32
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", r.Header.Get("X-Token"))
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(append([]byte(r.Method+" "+r.URL.RequestURI()+" "), b...))
	}))
	defer echo.Close()
	var hung atomic.Int32
	dropper := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hung.Add(1)
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close() // the connection is lost after the request was sent
	}))
	defer dropper.Close()
	// A port nothing listens on: a backend that is down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

	tests := []struct {
		name       string
		backends   []string
		wantStatus int
		wantEcho   int32 // requests the echo backend got
		wantDrop   int32 // requests the dropping backend got
	}{
		{"one down, the other takes every request", []string{down, host(echo)}, http.StatusAccepted, 4, 0},
		{"all down: 502", []string{down, down}, http.StatusBadGateway, 0, 0},
		{"lost after sending: 502, not sent again", []string{host(dropper)}, http.StatusBadGateway, 0, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got.Store(0)
			hung.Store(0)
			b, err := Balance(tt.backends...)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for range 4 {
				req, _ := http.NewRequest(http.MethodPost, b.URL()+"/api/x?q=1", strings.NewReader("body"))
				req.Header.Set("X-Token", "tok")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.wantStatus)
				}
				if tt.wantStatus == http.StatusAccepted && (string(body) != "POST /api/x?q=1 body" || resp.Header.Get("X-Seen") != "tok") {
					t.Fatalf("forwarded as %q, header %q", body, resp.Header.Get("X-Seen"))
				}
			}
			if got.Load() != tt.wantEcho || hung.Load() != tt.wantDrop {
				t.Fatalf("echo got %d, dropper %d; want %d, %d", got.Load(), hung.Load(), tt.wantEcho, tt.wantDrop)
			}
		})
	}
}
