package service

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// writes records every Write it is given, each as one string.
type writes struct {
	mu  sync.Mutex
	got []string
	err error
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	w.got = append(w.got, string(p))
	return len(p), nil
}

func (w *writes) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.got...)
}

// A buffered line is not written at once, and is written within the
// interval without anything else written.
func TestLineWriterFlushesWithinItsInterval(t *testing.T) {
	var w writes
	lw := NewLineWriter(&w, 50*time.Millisecond, 1<<16)
	defer lw.Close()
	start := time.Now()
	if _, err := lw.Buffered().Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := lw.Buffered().Write([]byte("b\n")); err != nil {
		t.Fatal(err)
	}
	if got := w.all(); len(got) != 0 {
		t.Fatalf("written at once: %q", got)
	}
	for len(w.all()) == 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the buffered lines were never written")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("written after %s, before the interval", took)
	}
	if got := w.all(); len(got) != 1 || got[0] != "a\nb\n" {
		t.Errorf("writes %q, want the two lines in one", got)
	}
	// The next buffered line is timed afresh.
	if _, err := lw.Buffered().Write([]byte("c\n")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(w.all()) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second buffered line was never written")
		}
	}
}

// A line written at once goes after the buffered lines before it, in the
// same write: the order of the lines is the order they were logged in.
func TestLineWriterWritesAtOnceAfterTheBufferedLines(t *testing.T) {
	var w writes
	lw := NewLineWriter(&w, time.Hour, 1<<16)
	defer lw.Close()
	_, _ = lw.Buffered().Write([]byte("access 1\n"))
	_, _ = lw.Buffered().Write([]byte("access 2\n"))
	if n, err := lw.Write([]byte("payment\n")); err != nil || n != len("payment\n") {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if got := w.all(); len(got) != 1 || got[0] != "access 1\naccess 2\npayment\n" {
		t.Errorf("writes %q", got)
	}
	if _, err := lw.Write([]byte("payment 2\n")); err != nil {
		t.Fatal(err)
	}
	if got := w.all(); len(got) != 2 || got[1] != "payment 2\n" {
		t.Errorf("writes %q", got)
	}
}

// A full buffer is written at once; Close writes what is left, and the
// lines buffered after it are written at once.
func TestLineWriterFullAndClose(t *testing.T) {
	var w writes
	lw := NewLineWriter(&w, time.Hour, 10)
	_, _ = lw.Buffered().Write([]byte("12345\n"))
	_, _ = lw.Buffered().Write([]byte("67890\n"))
	if got := w.all(); len(got) != 1 || got[0] != "12345\n67890\n" {
		t.Fatalf("writes %q, want the full buffer written", got)
	}
	_, _ = lw.Buffered().Write([]byte("left\n"))
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	if got := w.all(); len(got) != 2 || got[1] != "left\n" {
		t.Fatalf("writes %q, want what was left written by Close", got)
	}
	_, _ = lw.Buffered().Write([]byte("late\n"))
	if got := w.all(); len(got) != 3 || got[2] != "late\n" {
		t.Errorf("writes %q, want a line after Close written at once", got)
	}
}

// A writer that fails drops the buffered lines rather than keeping them
// without bound, and Write reports its error.
func TestLineWriterFailing(t *testing.T) {
	w := writes{err: errors.New("broken pipe")}
	lw := NewLineWriter(&w, time.Hour, 8)
	defer lw.Close()
	for range 100 {
		_, _ = lw.Buffered().Write([]byte("line\n"))
	}
	if n := lw.buffered(); n > 8 {
		t.Errorf("%d bytes buffered after failed writes", n)
	}
	if _, err := lw.Write([]byte("x\n")); err == nil {
		t.Error("Write to a failing writer: no error")
	}
}

// Many goroutines logging through both sides lose no line and split none.
func TestLineWriterConcurrent(t *testing.T) {
	var b bytes.Buffer
	lw := NewLineWriter(&b, time.Millisecond, 256)
	now, later := slog.New(slog.NewJSONHandler(lw, nil)), slog.New(slog.NewJSONHandler(lw.Buffered(), nil))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				if (g+i)%3 == 0 {
					now.Info("now", "g", g, "i", i)
				} else {
					later.Info("later", "g", g, "i", i)
				}
			}
		})
	}
	wg.Wait()
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 8*200 {
		t.Fatalf("%d lines, want %d", len(lines), 8*200)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"time":`) || !strings.HasSuffix(l, "}") {
			t.Fatalf("line %q split or merged", l)
		}
	}
}

// Main's access logger writes through the same writer as its logger, and
// whatever it holds is written when the service stops.
func TestMainFlushesTheAccessLogAtTheEnd(t *testing.T) {
	defer func(d time.Duration) { accessFlushInterval = d }(accessFlushInterval)
	accessFlushInterval = time.Hour // only the end writes the last line
	var stderr bytes.Buffer
	code := mainLogs("svc", func(string) string { return "" }, &stderr, func(ctx context.Context, logs Loggers) error {
		logs.Access.Info("request", "status", 200)
		logs.Log.Info("stk push accepted")
		logs.Access.Info("request", "status", 202)
		return nil
	})
	if code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	got := stderr.String()
	i200, iAcc, i202 := strings.Index(got, `"status":200`), strings.Index(got, `"msg":"stk push accepted"`), strings.Index(got, `"status":202`)
	if i200 < 0 || iAcc < 0 || i202 < 0 || !(i200 < iAcc && iAcc < i202) {
		t.Errorf("stderr %q, want the three lines in the order logged", got)
	}
	if !strings.Contains(got, `"msg":"request","service":"svc"`) {
		t.Errorf("access line without its service: %q", got)
	}
}
