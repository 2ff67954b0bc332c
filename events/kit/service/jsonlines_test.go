package service

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBoth logs the same line through slog's JSONHandler and jsonHandler,
// each under with's attrs (and group, when one is named), and returns both.
func logBoth(t testing.TB, with []slog.Attr, group string, r slog.Record) (want, got string) {
	t.Helper()
	var wb, gb bytes.Buffer
	var wh, gh slog.Handler = slog.NewJSONHandler(&wb, nil), newJSONHandler(&gb)
	wh, gh = wh.WithAttrs(with), gh.WithAttrs(with)
	if group != "" {
		wh, gh = wh.WithGroup(group), gh.WithGroup(group)
	}
	if err := wh.Handle(context.Background(), r.Clone()); err != nil {
		t.Fatal(err)
	}
	if err := gh.Handle(context.Background(), r.Clone()); err != nil {
		t.Fatal(err)
	}
	return wb.String(), gb.String()
}

// TestJSONHandlerMatchesSlog: every line, written by hand or not, has
// slog's JSONHandler's bytes.
func TestJSONHandlerMatchesSlog(t *testing.T) {
	at := time.Date(2026, 12, 7, 11, 56, 51, 123456000, time.UTC)
	service := []slog.Attr{slog.String("service", "api")}
	access := []slog.Attr{
		slog.String("method", "GET"), slog.String("path", "/api/stk-push/0193a9d8-8f7e-7b3c-9a1e-1234567890ab"),
		slog.Int("status", 200), slog.Duration("duration", 1234567*time.Nanosecond), slog.Int64("bytes", 612),
		slog.String("remote", "127.0.0.1:45678"), slog.String("client", "acme"),
		slog.String("tracking_id", "0193a9d8-8f7e-7b3c-9a1e-1234567890ab"),
	}
	for _, tc := range []struct {
		name  string
		with  []slog.Attr
		group string
		time  time.Time
		level slog.Level
		msg   string
		attrs []slog.Attr
	}{
		{name: "access line", with: service, time: at, msg: "request", attrs: access},
		{name: "no attrs", time: at, msg: "hello"},
		{name: "empty message", with: service, time: at},
		{name: "every plain kind", with: service, time: at, level: slog.LevelWarn, msg: "m", attrs: []slog.Attr{
			slog.Uint64("seq", math.MaxUint64), slog.Bool("duplicate", true), slog.Bool("no", false),
			slog.Int64("min", math.MinInt64), slog.Duration("neg", -time.Second)}},
		{name: "other levels", with: service, time: at, level: slog.LevelError + 2, msg: "m"},
		{name: "debug+1", time: at, level: slog.LevelDebug + 1, msg: "m"},
		{name: "local time", with: service, time: at.In(time.FixedZone("EAT", 3*3600)), msg: "m"},
		{name: "whole second", time: at.Truncate(time.Second), msg: "m"},
		{name: "monotonic", time: time.Now(), msg: "m"},
		{name: "zero time", with: service, msg: "m", attrs: access},
		{name: "year 10000", time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), msg: "m"},
		{name: "quoted path", with: service, time: at, msg: "request", attrs: []slog.Attr{slog.String("path", `/a"b\c`)}},
		{name: "control", time: at, msg: "line\nbreak"},
		{name: "not ASCII", time: at, msg: "m", attrs: []slog.Attr{slog.String("path", "/é\xff\u2028<>&")}},
		{name: "DEL", time: at, msg: "m\x7f"},
		{name: "odd key", time: at, msg: "m", attrs: []slog.Attr{slog.Int("a\"b", 1)}},
		{name: "empty key", time: at, msg: "m", attrs: []slog.Attr{slog.Int("", 1), slog.Any("", nil), slog.String("k", "v")}},
		{name: "error value", time: at, msg: "m", attrs: []slog.Attr{slog.Any("error", errors.New("boom"))}},
		{name: "float", time: at, msg: "m", attrs: []slog.Attr{slog.Float64("f", 1.5)}},
		{name: "time value", time: at, msg: "m", attrs: []slog.Attr{slog.Time("at", at)}},
		{name: "group value", time: at, msg: "m", attrs: []slog.Attr{slog.Group("g", slog.Int("a", 1))}},
		{name: "empty group value", time: at, msg: "m", attrs: []slog.Attr{slog.Group("g")}},
		{name: "duplicate keys", with: service, time: at, msg: "m", attrs: []slog.Attr{slog.String("service", "again")}},
		{name: "logger group", with: service, group: "g", time: at, msg: "m", attrs: access},
		{name: "logger attr not plain", with: []slog.Attr{slog.Any("err", errors.New("x"))}, time: at, msg: "m", attrs: access},
		{name: "logger attr quoted", with: []slog.Attr{slog.String("k", "\"")}, time: at, msg: "m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := slog.NewRecord(tc.time, tc.level, tc.msg, 0)
			r.AddAttrs(tc.attrs...)
			want, got := logBoth(t, tc.with, tc.group, r)
			if got != want {
				t.Errorf("line\n got %s\nwant %s", got, want)
			}
		})
	}
}

// TestJSONHandlerNested: attrs and groups added in steps, as services
// do (With on With), keep slog's bytes.
func TestJSONHandlerNested(t *testing.T) {
	var wb, gb bytes.Buffer
	want := slog.New(slog.NewJSONHandler(&wb, nil)).With("service", "api").With("tracking_id", "t1", "n", 2)
	got := slog.New(newJSONHandler(&gb)).With("service", "api").With("tracking_id", "t1", "n", 2)
	for _, l := range []*slog.Logger{want, got} {
		l.Info("accepted", "amount", 1500, "duplicate", false)
		l.WithGroup("g").Info("grouped", "a", 1)
		l.With("error", errors.New("boom")).Warn("failed", "k", "v")
		l.Debug("not logged")
		l.Info("after")
	}
	// The times differ: compare the lines without them.
	strip := func(s string) string {
		var out []string
		for _, line := range strings.Split(s, "\n") {
			if i := strings.Index(line, `","level"`); i > 0 {
				line = line[i:]
			}
			out = append(out, line)
		}
		return strings.Join(out, "\n")
	}
	if g, w := strip(gb.String()), strip(wb.String()); g != w {
		t.Errorf("lines\n got %s\nwant %s", g, w)
	}
}

// TestJSONHandlerConcurrent: lines written at once from many goroutines,
// by hand and through slog, are whole lines (the race detector checks
// the writer is not shared unguarded).
func TestJSONHandlerConcurrent(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(newJSONHandler(&b)).With("service", "api")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				if i%2 == 0 {
					log.Info("plain", "i", i)
				} else {
					log.Info("escaped", "s", "a\"b")
				}
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 400 {
		t.Fatalf("%d lines, want 400", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"time":"`) || !strings.HasSuffix(l, "}") {
			t.Fatalf("line %q", l)
		}
	}
}

func FuzzJSONHandler(f *testing.F) {
	f.Add(int64(1796627271369959102), 0, "request", "path", "/api/stk-push/x", int64(200), uint64(3), true)
	f.Add(int64(-1), 4, "m\n", "k\"", "\xff", int64(-5), uint64(0), false)
	f.Add(int64(math.MaxInt64), -4, "", "", "", int64(0), uint64(math.MaxUint64), false)
	f.Fuzz(func(t *testing.T, nanos int64, level int, msg, key, s string, i int64, u uint64, bl bool) {
		r := slog.NewRecord(time.Unix(0, nanos).UTC(), slog.Level(level), msg, 0)
		r.AddAttrs(slog.String(key, s), slog.Int64("i", i), slog.Uint64("u", u), slog.Bool("b", bl),
			slog.Duration("d", time.Duration(i)))
		want, got := logBoth(t, []slog.Attr{slog.String("service", s)}, "", r)
		if got != want {
			t.Errorf("line\n got %s\nwant %s", got, want)
		}
	})
}

// BenchmarkAccessLine is the api's access line through NewLogger's
// handler (to a discarding writer); BenchmarkAccessLineSlog through
// slog's JSONHandler, as before.
func BenchmarkAccessLine(b *testing.B) {
	benchmarkAccessLine(b, newJSONHandler(discard{}))
}

func BenchmarkAccessLineSlog(b *testing.B) {
	benchmarkAccessLine(b, slog.NewJSONHandler(discard{}, nil))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func benchmarkAccessLine(b *testing.B, h slog.Handler) {
	h = h.WithAttrs([]slog.Attr{slog.String("service", "api")})
	b.ReportAllocs()
	for b.Loop() {
		r := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
		r.AddAttrs(slog.String("method", "GET"), slog.String("path", "/api/stk-push/0193a9d8-8f7e-7b3c-9a1e-1234567890ab"),
			slog.Int("status", 200), slog.Duration("duration", 1234567), slog.Int64("bytes", 612),
			slog.String("remote", "127.0.0.1:45678"), slog.String("client", "acme"),
			slog.String("tracking_id", "0193a9d8-8f7e-7b3c-9a1e-1234567890ab"))
		_ = h.Handle(context.Background(), r)
	}
}

// TestJSONHandlerDropsHugeLineBuffers: the room of a huge line (a hostile
// value logged whole) is not kept in the pool of line buffers for the
// lines after it, as slog drops its own buffers over 16 KiB.
func TestJSONHandlerDropsHugeLineBuffers(t *testing.T) {
	h := newJSONHandler(discard{})
	huge := strings.Repeat("a", 1<<20)
	for range 20 {
		r := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
		r.AddAttrs(slog.String("path", huge))
		if err := h.Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		bp := lineBufs.Get().(*[]byte)
		if c := cap(*bp); c > 16<<10 {
			t.Fatalf("a buffer of %d bytes kept after a huge line, want at most %d", c, 16<<10)
		}
		lineBufs.Put(bp)
	}
}
