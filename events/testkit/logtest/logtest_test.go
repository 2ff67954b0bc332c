package logtest

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Key    string
	Secret string
}

type entry struct {
	Name  string
	Token string
}

type config struct {
	Addr    string
	Wait    time.Duration
	Count   int
	Verbose bool
	Allow   []netip.Prefix
	Inner   inner
	Entries []entry
	Logger  *slog.Logger
}

// logValue is what config.LogValue shows; tests swap it for a faulty one.
var logValue = func(c config) slog.Value {
	var names []string
	for _, e := range c.Entries {
		names = append(names, e.Name)
	}
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.Duration("wait", c.Wait),
		slog.Int("count", c.Count),
		slog.Bool("verbose", c.Verbose),
		slog.Any("allow", c.Allow),
		slog.String("key", c.Inner.Key),
		slog.String("secret", mask(c.Inner.Secret)),
		slog.String("names", strings.Join(names, ",")),
	)
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

func (c config) LogValue() slog.Value { return logValue(c) }

var opts = Options{
	Secrets:   []string{"Inner.Secret", "Entries[].Token"},
	NotLogged: []string{"Logger: not a setting"},
	Values:    map[string]any{"Allow": []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}},
	Leaks:     []string{"s3cr3t"},
	Shows:     []string{"[redacted]"},
}

var cfg = config{Addr: ":1", Inner: inner{Key: "k", Secret: "s3cr3t"}, Entries: []entry{{"a", "t0k"}}}

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, format)
}
func (r *recorder) Fatalf(format string, args ...any) { r.Errorf(format, args...) }

func TestCheckConfig(t *testing.T) {
	good := logValue
	t.Cleanup(func() { logValue = good })
	tests := []struct {
		name     string
		logValue func(config) slog.Value
		opts     func(Options) Options
		fails    bool
	}{
		{"masked and complete", good, nil, false},
		{"a secret shown", func(c config) slog.Value {
			return slog.GroupValue(slog.Any("v", good(c)), slog.String("leak", c.Inner.Secret))
		}, nil, true},
		{"a token shown", func(c config) slog.Value {
			return slog.GroupValue(slog.Any("v", good(c)), slog.Any("entries", c.Entries))
		}, nil, true},
		{"a setting missing", func(c config) slog.Value {
			c2 := c
			c2.Count = 0
			return good(c2)
		}, nil, true},
		{"a bool missing", func(c config) slog.Value {
			c2 := c
			c2.Verbose = false
			return good(c2)
		}, nil, true},
		{"a given value missing", func(c config) slog.Value {
			c2 := c
			c2.Allow = nil
			return good(c2)
		}, nil, true},
		{"a field neither logged nor listed", good, func(o Options) Options { o.NotLogged = nil; return o }, true},
		{"a listed field that does not exist", good, func(o Options) Options {
			o.NotLogged = append(o.NotLogged, "Gone")
			return o
		}, true},
		{"a show missing", good, func(o Options) Options { o.Shows = []string{"nowhere"}; return o }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logValue = tc.logValue
			o := opts
			if tc.opts != nil {
				o = tc.opts(o)
			}
			r := &recorder{TB: t}
			CheckConfig(r, cfg, o)
			if failed := len(r.errs) > 0; failed != tc.fails {
				t.Errorf("failed = %v (%q), want %v", failed, r.errs, tc.fails)
			}
		})
	}
}
