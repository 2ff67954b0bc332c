package service

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// jsonHandler is slog's JSONHandler (no options) whose common lines are
// written by hand: a line whose message, keys and values are plain (every
// key and string printable ASCII without '"' or '\\'; values strings,
// integers, booleans or durations) and whose logger has no group is
// written here, with the bytes slog's handler writes for it; any other
// line goes to slog's handler itself. slog's generic formatting was most
// of an access line's cost (some 3 µs of the api's poll, against 0.7 µs
// here). TestJSONHandlerMatchesSlog and FuzzJSONHandler hold the two
// together.
type jsonHandler struct {
	slow slog.Handler // slog's JSONHandler, with the same attrs and groups
	w    io.Writer
	mu   *sync.Mutex // shared by the clones and slow's writes: one line at a time
	// prefix is the logger's attrs (WithAttrs) as slog writes them after
	// the message: `,"service":"api"`.
	prefix []byte
	// fast is false once a group or an attr that is not plain was added:
	// every line goes to slow.
	fast bool
}

func newJSONHandler(w io.Writer) *jsonHandler {
	mu := new(sync.Mutex)
	return &jsonHandler{slow: slog.NewJSONHandler(lockedWriter{mu, w}, nil), w: w, mu: mu, fast: true}
}

// lockedWriter is slow's writer: its lines and the fast path's are
// written one at a time.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (h *jsonHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.slow.Enabled(ctx, l) }

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxLineBuf is the largest line buffer put back in lineBufs, as slog's
// own pool: a huge line's room (a hostile value logged whole) is not kept
// for the lines after it.
const maxLineBuf = 16 << 10

func putLineBuf(bp *[]byte) {
	if cap(*bp) <= maxLineBuf {
		lineBufs.Put(bp)
	}
}

func (h *jsonHandler) Handle(ctx context.Context, r slog.Record) error {
	if !h.fast || r.Time.IsZero() {
		return h.slow.Handle(ctx, r)
	}
	bp := lineBufs.Get().(*[]byte)
	defer putLineBuf(bp)
	b, ok := appendJSONLine((*bp)[:0], h.prefix, r)
	*bp = b
	if !ok {
		return h.slow.Handle(ctx, r)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.w.Write(b)
	return err
}

func (h *jsonHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	nh := *h
	nh.slow = h.slow.WithAttrs(as)
	if nh.fast {
		p := append([]byte(nil), h.prefix...)
		for _, a := range as {
			if p, nh.fast = appendPlainAttr(p, a); !nh.fast {
				break
			}
		}
		nh.prefix = p
	}
	return &nh
}

func (h *jsonHandler) WithGroup(name string) slog.Handler {
	nh := *h
	nh.slow, nh.fast = h.slow.WithGroup(name), false
	return &nh
}

// appendJSONLine appends r's line as slog's JSONHandler writes it, with
// prefix after the message; false when a part of it is not plain (b is
// then garbage).
func appendJSONLine(b, prefix []byte, r slog.Record) ([]byte, bool) {
	t := r.Time.Round(0) // as slog: no monotonic reading
	if y := t.Year(); y < 0 || y >= 10000 {
		return b, false // slog writes an error of its own
	}
	b = append(b, `{"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":`...)
	b, ok := appendPlainString(b, r.Level.String())
	if !ok {
		return b, false
	}
	b = append(b, `,"msg":`...)
	if b, ok = appendPlainString(b, r.Message); !ok {
		return b, false
	}
	b = append(b, prefix...)
	r.Attrs(func(a slog.Attr) bool {
		b, ok = appendPlainAttr(b, a)
		return ok
	})
	if !ok {
		return b, false
	}
	return append(b, "}\n"...), true
}

// appendPlainAttr appends `,"key":value`, or false when a is not plain.
func appendPlainAttr(b []byte, a slog.Attr) ([]byte, bool) {
	if a.Key == "" {
		return b, false // slog's rules for empty keys are its own
	}
	b = append(b, ',')
	b, ok := appendPlainString(b, a.Key)
	if !ok {
		return b, false
	}
	b = append(b, ':')
	switch v := a.Value; v.Kind() {
	case slog.KindString:
		return appendPlainString(b, v.String())
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10), true
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10), true
	case slog.KindBool:
		return strconv.AppendBool(b, v.Bool()), true
	case slog.KindDuration:
		return strconv.AppendInt(b, int64(v.Duration()), 10), true
	}
	return b, false
}

// appendPlainString appends s quoted, or false when a byte of it would
// be escaped (or is not ASCII).
func appendPlainString(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}
