package envconf

import (
	"errors"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// getenv is an environment holding X only, set to v; X is unset when v is
// the string "<unset>".
func getenv(v string) func(string) string {
	return func(name string) string {
		if name != "X" || v == "<unset>" {
			return ""
		}
		return v
	}
}

type readCase struct {
	name string
	v    string
	want any    // the value read
	err  string // "" when none; else a substring of the error
}

// check reads X with read from each case's environment and compares.
func check(t *testing.T, cases []readCase, read func(*Env) any) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := New(getenv(tc.v))
			got := read(e)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("X=%q: got %v, want %v", tc.v, got, tc.want)
			}
			err := e.Err()
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("X=%q: error %v", tc.v, err)
			case tc.err != "" && err == nil:
				t.Errorf("X=%q: no error, want one saying %q", tc.v, tc.err)
			case tc.err != "" && !strings.Contains(err.Error(), tc.err):
				t.Errorf("X=%q: error %q does not say %q", tc.v, err, tc.err)
			case err != nil && !strings.HasPrefix(err.Error(), "X: "):
				t.Errorf("X=%q: error %q does not start with the variable", tc.v, err)
			}
		})
	}
}

func TestInt(t *testing.T) {
	check(t, []readCase{
		{"unset", "<unset>", 7, ""},
		{"empty", "", 7, ""},
		{"blank", "  ", 7, ""},
		{"good", " 3 ", 3, ""},
		{"low bound", "1", 1, ""},
		{"high bound", "10", 10, ""},
		{"not a number", "three", 7, `X: "three" is not a whole number; it must be a whole number from 1 to 10, such as 7`},
		{"fraction", "2.5", 7, `X: "2.5" is not a whole number`},
		{"below", "0", 7, `X: "0" is not in range; it must be a whole number from 1 to 10`},
		{"above", "11", 7, `X: "11" is not in range`},
		{"overflow", "99999999999999999999", 7, "is not a whole number"},
	}, func(e *Env) any { return e.Int("X", 7, 1, 10) })
	check(t, []readCase{
		{"no upper bound", "1000000", 1000000, ""},
		{"below", "-1", 0, "a whole number of at least 0, such as 0"},
	}, func(e *Env) any { return e.Int("X", 0, 0, math.MaxInt) })
}

func TestFloat(t *testing.T) {
	check(t, []readCase{
		{"unset", "<unset>", 20.0, ""},
		{"empty", "", 20.0, ""},
		{"good", "2.5", 2.5, ""},
		{"zero", "0", 0.0, ""},
		{"not a number", "fast", 20.0, `X: "fast" is not a number; it must be a number from 0 to 10000, such as 20`},
		{"NaN", "NaN", 20.0, `X: "NaN" is not a number`},
		{"infinite", "+Inf", 20.0, `X: "+Inf" is not a number`},
		{"below", "-1", 20.0, `X: "-1" is not in range`},
		{"above", "10000.5", 20.0, `X: "10000.5" is not in range`},
	}, func(e *Env) any { return e.Float("X", 20, 0, 10000) })
	check(t, []readCase{
		{"no upper bound", "1e9", 1e9, ""},
		{"below", "-0.5", 1.0, "a number of at least 0, such as 1"},
	}, func(e *Env) any { return e.Float("X", 1, 0, math.Inf(1)) })
}

func TestDuration(t *testing.T) {
	check(t, []readCase{
		{"unset", "<unset>", 30 * time.Second, ""},
		{"empty", "", 30 * time.Second, ""},
		{"good", "2500ms", 2500 * time.Millisecond, ""},
		{"high bound", "5m", 5 * time.Minute, ""},
		{"no unit", "30", 30 * time.Second, `X: "30" is not a duration; it must be a duration above 0 and at most 5m, such as 30s`},
		{"zero", "0s", 30 * time.Second, `X: "0s" is not in range; it must be a duration above 0 and at most 5m`},
		{"negative", "-1s", 30 * time.Second, `X: "-1s" is not in range`},
		{"above", "1h", 30 * time.Second, `X: "1h" is not in range`},
		{"days", "1d", 30 * time.Second, `X: "1d" is not a duration`},
	}, func(e *Env) any { return e.Duration("X", 30*time.Second, time.Nanosecond, 5*time.Minute) })
	check(t, []readCase{
		{"bounds", "30s", time.Hour, `from 1m to 168h, such as 1h`},
		{"bare zero", "0", time.Hour, `X: "0" is not in range`},
	}, func(e *Env) any { return e.Duration("X", time.Hour, time.Minute, 7*24*time.Hour) })
	check(t, []readCase{
		{"zero allowed", "0", time.Duration(0), ""},
		{"no upper bound", "1000h", 1000 * time.Hour, ""},
		{"negative", "-1m", 2 * time.Minute, "a duration of at least 0s, such as 2m"},
		{"unbounded text", "soon", 2 * time.Minute, "is not a duration"},
	}, func(e *Env) any { return e.Duration("X", 2*time.Minute, 0, MaxDuration) })
	check(t, []readCase{
		{"any", "-5h", -5 * time.Hour, ""},
	}, func(e *Env) any { return e.Duration("X", time.Hour, MinDuration, MaxDuration) })
}

func TestBool(t *testing.T) {
	check(t, []readCase{
		{"unset", "<unset>", true, ""},
		{"empty", "", true, ""},
		{"false", "False", false, ""},
		{"zero", "0", false, ""},
		{"off", "off", false, ""},
		{"yes", "YES", true, ""},
		{"bad", "maybe", true, `X: "maybe" is not a yes or no; it must be true or false`},
	}, func(e *Env) any { return e.Bool("X", true) })
}

func TestOneOf(t *testing.T) {
	check(t, []readCase{
		{"unset", "<unset>", "async", ""},
		{"empty", "", "async", ""},
		{"good", "sync", "sync", ""},
		{"any case", "SYNC", "sync", ""},
		{"bad", "eventually", "async", `X: "eventually" is not a choice offered; it must be async or sync`},
	}, func(e *Env) any { return e.OneOf("X", "async", "async", "sync") })
}

func TestReplicas(t *testing.T) {
	check(t, []readCase{
		{"unset", "<unset>", 1, ""},
		{"empty", "", 1, ""},
		{"good", "3", 3, ""},
		{"five", "5", 5, ""},
		{"zero", "0", 1, `X: "0" is not in range; it must be a whole number from 1 to 5, such as 1`},
		{"six", "6", 1, `X: "6" is not in range`},
		{"word", "three", 1, `X: "three" is not a whole number`},
	}, func(e *Env) any { return e.Replicas("X", 1) })
}

func TestNATSURL(t *testing.T) {
	check(t, []readCase{
		{"unset, required", "<unset>", "", "X: required; it must be a URL such as nats://host:4222"},
		{"empty, required", " ", "", "X: required"},
		{"one", "nats://nats:4222", "nats://nats:4222", ""},
		{"several", "nats://a:4222, tls://b:4222,ws://c:80,wss://d", "nats://a:4222, tls://b:4222,ws://c:80,wss://d", ""},
		{"credentials", "nats://user:pw@a:4222", "nats://user:pw@a:4222", ""},
		{"no scheme", "localhost:4222", "", "X: "},
		{"no host", "localhost", "", "X: entry 1 is not a URL with a host"},
		{"empty entry", "nats://a:1,", "", "X: entry 2 is not a URL with a host"},
		{"http", "http://nats:4222", "", `X: scheme "http" is not one a NATS client dials; it must be nats, tls, ws or wss`},
	}, func(e *Env) any { return e.NATSURL("X", "") })
	check(t, []readCase{
		{"default", "<unset>", "nats://127.0.0.1:4222", ""},
	}, func(e *Env) any { return e.NATSURL("X", "nats://127.0.0.1:4222") })
}

// A NATS URL may carry a password or token; a malformed one is never
// repeated, even in part.
func TestNATSURLNotEchoed(t *testing.T) {
	for _, v := range []string{"nats://u:s3cr3t@:bad:port", "s3cr3t", "nats://s3cr3t@a:1,%zz", "nats://a:1, s3cr3t@b:4222"} {
		e := New(getenv(v))
		e.NATSURL("X", "")
		if err := e.Err(); err == nil || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("X=%q: error %v", v, err)
		}
	}
}

func TestCIDRs(t *testing.T) {
	def := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	check(t, []readCase{
		{"unset", "<unset>", def, ""},
		{"empty", "", def, ""},
		{"good", " 10.1.0.0/16, 192.0.2.7 ,2001:db8::/32", []netip.Prefix{
			netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32")}, ""},
		{"not a CIDR", "10.0.0.0/8,proxy.local", def, `X: "proxy.local" is neither a CIDR nor an address; it must be networks`},
		{"host bits", "10.0.0.1/8", def, `X: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`},
	}, func(e *Env) any { return e.CIDRs("X", def) })
}

func TestListenAddr(t *testing.T) {
	check(t, []readCase{
		{"unset", "<unset>", ":8080", ""},
		{"empty", "", ":8080", ""},
		{"port", ":9000", ":9000", ""},
		{"host and port", "127.0.0.1:9000", "127.0.0.1:9000", ""},
		{"ipv6", "[::1]:9000", "[::1]:9000", ""},
		{"no port", "8080", ":8080", `X: "8080" is not host:port; it must be host:port`},
		{"named port", ":http-alt", ":8080", `X: ":http-alt" is not an address with a valid port`},
		{"port too big", ":65536", ":8080", `X: ":65536" is not an address with a valid port`},
	}, func(e *Env) any { return e.ListenAddr("X", ":8080") })
}

func TestHTTPURL(t *testing.T) {
	check(t, []readCase{
		{"unset, required", "<unset>", "", "X: required; it must be the base"},
		{"https", "https://pay.example.com/stk/", "https://pay.example.com/stk/", ""},
		{"http", "http://127.0.0.1:5555", "http://127.0.0.1:5555", ""},
		{"relative", "/hooks", "", "X: the value is not an absolute http(s) URL; it must be the base"},
		{"no scheme", "pay.example.com", "", "X: the value is not an absolute http(s) URL"},
		{"ftp", "ftp://pay.example.com", "", "X: the value is not an absolute http(s) URL"},
		{"query", "https://pay.example.com/?a=b", "", "X: the URL has a query or fragment"},
		{"empty query", "https://pay.example.com/?", "", "X: the URL has a query or fragment"},
		{"fragment", "https://pay.example.com/#a", "", "X: the URL has a query or fragment"},
	}, func(e *Env) any { return e.HTTPURL("X", "", "the base") })
	check(t, []readCase{
		{"default", "<unset>", "https://sandbox", ""},
	}, func(e *Env) any { return e.HTTPURL("X", "https://sandbox", "the base") })
	for _, v := range []string{"https://u:s3cr3t@host:bad:port", "https://u:s3cr3t@host/?q", "s3cr3t"} {
		e := New(getenv(v))
		e.HTTPURL("X", "", "the base")
		if err := e.Err(); err == nil || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("X=%q: error %v", v, err)
		}
	}
}

func TestStringAndRequired(t *testing.T) {
	check(t, []readCase{
		{"unset", "<unset>", "def", ""},
		{"empty", "", "def", ""},
		{"trimmed", " v ", "v", ""},
	}, func(e *Env) any { return e.String("X", "def") })
	check(t, []readCase{
		{"unset", "<unset>", "", "X: required; it must be a thing"},
		{"blank", "\t", "", "X: required"},
		{"set", "v", "v", ""},
	}, func(e *Env) any { return e.Required("X", "a thing") })
}

// Every bad setting is reported, in the order read, each once; good ones
// add nothing.
func TestErrorsJoined(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "7", "C": "1h", "D": "nats://a:1", "E": "ftp://a", "F": "10.0.0.1/8"}
	e := New(func(k string) string { return vars[k] })
	e.Int("A", 1, 0, 10)
	e.Int("B", 1, 0, 10)
	e.Duration("C", time.Second, time.Nanosecond, time.Minute)
	e.NATSURL("D", "")
	e.NATSURL("E", "")
	e.CIDRs("F", nil)
	e.Required("G", "set")
	e.Fail("H", errors.New("custom"))
	err := e.Err()
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"A: ", "C: ", "E: ", "F: ", "G: ", "H: custom"}
	if len(lines) != len(want) {
		t.Fatalf("errors %q, want %d", lines, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d is %q, want it to start %q", i, lines[i], w)
		}
	}
	if New(func(string) string { return "" }).Err() != nil {
		t.Error("an Env that read nothing has an error")
	}
}

func TestShort(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour: "1h", 90 * time.Second: "1m30s", 90 * time.Minute: "1h30m", 0: "0s", 2500 * time.Millisecond: "2.5s", 7 * 24 * time.Hour: "168h",
	} {
		if got := Short(d); got != want {
			t.Errorf("Short(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestDefault(t *testing.T) {
	for _, tt := range []struct{ in, want time.Duration }{{0, time.Second}, {-time.Minute, time.Second}, {time.Minute, time.Minute}} {
		got := tt.in
		Default(&got, time.Second)
		if got != tt.want {
			t.Errorf("Default(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	n := 0
	Default(&n, 32)
	if n != 32 {
		t.Errorf("Default(0) = %d, want 32", n)
	}
}
