package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			io.WriteString(w, "ok")
		case "/notready":
			http.Error(w, "nats: disconnected", http.StatusServiceUnavailable)
		case "/slow":
			<-r.Context().Done()
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"ready", []string{srv.URL + "/readyz"}, 0, ""},
		{"not ready", []string{srv.URL + "/notready"}, 1, "503"},
		{"not found", []string{srv.URL + "/nothing"}, 1, "404"},
		{"redirect not followed", []string{srv.URL + "/moved"}, 1, "302"},
		{"refused", []string{closed.URL + "/readyz"}, 1, "refused"},
		{"timeout", []string{"-timeout", "50ms", srv.URL + "/slow"}, 1, "deadline"},
		{"no url", nil, 2, "usage"},
		{"two urls", []string{srv.URL, srv.URL}, 2, "usage"},
		{"not http", []string{"file:///etc/passwd"}, 2, "http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			start := time.Now()
			code := run(tc.args, &out)
			if code != tc.code || !strings.Contains(out.String(), tc.out) {
				t.Errorf("run(%q) = %d, %q; want %d with %q", tc.args, code, out.String(), tc.code, tc.out)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("took %s", time.Since(start))
			}
		})
	}
}
