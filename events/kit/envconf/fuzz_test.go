package envconf

import (
	"math"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Each parser of outside input, fuzzed: whatever the value, it does not
// panic, the result is the default or within the bounds, and an error
// names the variable.

// read reads X=v with read and checks what every parser promises.
func read[T any](t *testing.T, v string, read func(*Env) T) (T, error) {
	t.Helper()
	e := New(getenv(v))
	got := read(e)
	err := e.Err()
	if err != nil && !strings.HasPrefix(err.Error(), "X: ") {
		t.Fatalf("X=%q: error %q does not start with the variable", v, err)
	}
	return got, err
}

func FuzzInt(f *testing.F) {
	for _, s := range []string{"", "3", " 10 ", "-1", "0x10", "1e3", "99999999999999999999", "+5", "٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, err := read(t, v, func(e *Env) int { return e.Int("X", 7, 1, 10) })
		if n != 7 && (n < 1 || n > 10 || err != nil) {
			t.Fatalf("X=%q: %d, %v", v, n, err)
		}
	})
}

func FuzzFloat(f *testing.F) {
	for _, s := range []string{"", "2.5", "NaN", "-Inf", "1e400", "0x1p-2", "-0", "1_000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		x, err := read(t, v, func(e *Env) float64 { return e.Float("X", 20, 0, 10000) })
		if math.IsNaN(x) || x < 0 || x > 10000 || (err != nil && x != 20) {
			t.Fatalf("X=%q: %v, %v", v, x, err)
		}
	})
}

func FuzzDuration(f *testing.F) {
	for _, s := range []string{"", "30s", "0", "-1s", "1h", "1d", "9223372036854775807ns", "1.5µs", ".s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, err := read(t, v, func(e *Env) time.Duration { return e.Duration("X", 30*time.Second, time.Nanosecond, 5*time.Minute) })
		if d <= 0 || d > 5*time.Minute || (err != nil && d != 30*time.Second) {
			t.Fatalf("X=%q: %v, %v", v, d, err)
		}
	})
}

func FuzzBool(f *testing.F) {
	for _, s := range []string{"", "true", "0", "No", "maybe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		b, err := read(t, v, func(e *Env) bool { return e.Bool("X", true) })
		if err != nil && !b {
			t.Fatalf("X=%q: %v, %v", v, b, err)
		}
	})
}

func FuzzReplicas(f *testing.F) {
	for _, s := range []string{"", "1", "5", "6", "0", "-3", "three"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, _ := read(t, v, func(e *Env) int { return e.Replicas("X", 1) })
		if n < 1 || n > MaxReplicas {
			t.Fatalf("X=%q: %d replicas", v, n)
		}
	})
}

// readWithPassword reads X=scheme://user:password@rest with read and fails
// when an error shows the password.
func readWithPassword(t *testing.T, scheme, rest string, read1 func(*Env) string) (string, string, error) {
	t.Helper()
	const password = "Pw0rdMark"
	if strings.Contains(scheme+rest, password) {
		t.Skip()
	}
	v := scheme + "://user:" + password + "@" + rest
	got, err := read(t, v, read1)
	if err != nil && strings.Contains(err.Error(), password) {
		t.Fatalf("X=%q: error shows the password: %v", v, err)
	}
	return v, got, err
}

// FuzzNATSURL puts a password in a URL around fuzzed parts: whatever they
// make of it, an error never shows the password.
func FuzzNATSURL(f *testing.F) {
	for _, s := range [][2]string{{"nats", "a:4222"}, {"http", "a"}, {"", ""}, {"nats", ":bad:port"}, {"nats", "a:1,"}, {"wss", "%zz"}, {"tls", "a:1, b:2"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, scheme, rest string) {
		v, got, err := readWithPassword(t, scheme, rest, func(e *Env) string { return e.NATSURL("X", "") })
		if (err == nil) != (got != "") {
			t.Fatalf("X=%q: %q, %v", v, got, err)
		}
		if err == nil && CheckNATSURL(got) != nil {
			t.Fatalf("X=%q: accepted, but CheckNATSURL refuses it", v)
		}
	})
}

func FuzzCIDRs(f *testing.F) {
	for _, s := range []string{"", "10.0.0.0/8", "10.0.0.1/8", "::ffff:10.0.0.0/104", "192.0.2.7, 2001:db8::/32", "a,,b", "1.2.3.4/33"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		ps, err := read(t, v, func(e *Env) []netip.Prefix { return e.CIDRs("X", nil) })
		if err != nil && ps != nil {
			t.Fatalf("X=%q: %v and %v", v, ps, err)
		}
		for _, p := range ps {
			if !p.IsValid() || p.Masked() != p {
				t.Fatalf("X=%q: %v is not a network", v, p)
			}
		}
	})
}

func FuzzListenAddr(f *testing.F) {
	for _, s := range []string{"", ":8080", "127.0.0.1:9000", "[::1]:1", "8080", ":http", ":-1", ":65536"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		a, err := read(t, v, func(e *Env) string { return e.ListenAddr("X", ":8080") })
		if err != nil && a != ":8080" {
			t.Fatalf("X=%q: %q and %v", v, a, err)
		}
		if _, _, serr := net.SplitHostPort(a); serr != nil {
			t.Fatalf("X=%q: %q is not host:port", v, a)
		}
	})
}

// FuzzHTTPURL: a URL with a password around fuzzed parts; an error never
// shows it, and an accepted URL is absolute http(s) without a query.
func FuzzHTTPURL(f *testing.F) {
	for _, s := range [][2]string{{"https", "host/path"}, {"http", "h:bad:port"}, {"ftp", "h"}, {"https", "h/?a=b"}, {"", ""}, {"https", "h#x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, scheme, rest string) {
		v, got, err := readWithPassword(t, scheme, rest, func(e *Env) string { return e.HTTPURL("X", "", "a base URL") })
		if err != nil {
			return
		}
		u, perr := url.Parse(got)
		if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("X=%q: accepted %q", v, got)
		}
	})
}
