package service

import (
	"io"
	"sync"
	"time"
)

// How Main's access logger (Loggers.Access) holds its lines: written at
// most AccessFlushInterval after they were logged, or as soon as
// AccessBufferBytes of them are held, or before any line of the service's
// logger, or when the service stops.
const (
	AccessFlushInterval = 100 * time.Millisecond
	AccessBufferBytes   = 64 << 10
)

// LineWriter writes log lines to w, each Write a whole line (as slog's
// handlers write them). Its own Write writes at once; the lines written to
// Buffered are held, and written in one write with the ones held beside
// them: interval after the first of them, when max bytes are held, before
// the next line written at once (so that the lines keep the order they
// were logged in), or at Close. A held line is lost if the process dies
// before then (SIGKILL, a crash outside the code that logs): what is held
// must be what may be lost, never a line that stands for a payment.
type LineWriter struct {
	w        io.Writer
	interval time.Duration
	max      int

	mu     sync.Mutex
	buf    []byte
	timer  *time.Timer
	armed  bool // timer will fire for what buf holds
	closed bool // Close was called: every line is written at once
}

// NewLineWriter is a LineWriter writing to w, holding up to max bytes of
// Buffered lines for up to interval.
func NewLineWriter(w io.Writer, interval time.Duration, max int) *LineWriter {
	lw := &LineWriter{w: w, interval: interval, max: max, buf: make([]byte, 0, max)}
	lw.timer = time.AfterFunc(time.Hour, lw.timerFlush)
	lw.timer.Stop()
	return lw
}

// Write writes p at once, after the held lines, in one write.
func (lw *LineWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if len(lw.buf) == 0 {
		return lw.w.Write(p)
	}
	lw.buf = append(lw.buf, p...)
	if err := lw.flushLocked(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Buffered is the writer whose lines are held.
func (lw *LineWriter) Buffered() io.Writer { return (*heldLines)(lw) }

// heldLines is LineWriter's Buffered side.
type heldLines LineWriter

// Write holds p (a copy) for up to the interval. Its error is nil unless
// the lines are written now and the write fails.
func (h *heldLines) Write(p []byte) (int, error) {
	lw := (*LineWriter)(h)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.closed {
		return lw.w.Write(p)
	}
	lw.buf = append(lw.buf, p...)
	if len(lw.buf) >= lw.max {
		if err := lw.flushLocked(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if !lw.armed {
		lw.armed = true
		lw.timer.Reset(lw.interval)
	}
	return len(p), nil
}

// flushLocked writes what is held, in one write. On a failure the lines
// are dropped: kept, they would grow without bound while the writer fails.
func (lw *LineWriter) flushLocked() error {
	if lw.armed {
		lw.armed = false
		lw.timer.Stop()
	}
	if len(lw.buf) == 0 {
		return nil
	}
	_, err := lw.w.Write(lw.buf)
	if cap(lw.buf) > 4*lw.max {
		lw.buf = make([]byte, 0, lw.max) // a huge line's room is not kept
	} else {
		lw.buf = lw.buf[:0]
	}
	return err
}

// timerFlush writes what is held once the interval passed. A firing that
// comes after the lines were written already writes nothing, or writes
// the lines held since early, which only ever makes them earlier.
func (lw *LineWriter) timerFlush() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.armed = false
	_ = lw.flushLocked()
}

// Close writes what is held; the lines after it are written at once.
func (lw *LineWriter) Close() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.closed = true
	return lw.flushLocked()
}

// buffered is how many bytes are held.
func (lw *LineWriter) buffered() int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return len(lw.buf)
}
