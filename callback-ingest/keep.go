package callback

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
)

// delivery is one callback as it arrived, for its raw copy in the
// STK_CALLBACKS stream.
type delivery struct {
	// id is unique per delivery: a repeated callback is a second delivery,
	// kept as such. It is the copy's Nats-Msg-Id, so only a retried publish
	// of this very delivery is dropped.
	id         string
	at         time.Time
	trackingID string // "" when the path names no well-formed one
	headers    nats.Header
	body       []byte
	detail     string // why the body is unparseable
	// cutFrom is the body's length as received when body is only its
	// start (keepRefused); 0 when it is whole.
	cutFrom int
}

// Bounds on the request values copied into headers: they come from anyone
// who can reach the webhook.
const (
	maxPathHeader  = 1024
	maxOtherHeader = 256
)

// received records what is known of a request before its body is read.
func (h *handler) received(r *http.Request, trackingID string) *delivery {
	d := &delivery{id: uuid.NewString(), at: h.now().UTC(), trackingID: trackingID, headers: nats.Header{}}
	set := func(key, value string, limit int) {
		if v := headerValue(value, limit); v != "" {
			d.headers.Set(key, v)
		}
	}
	set(events.CallbackHeaderID, d.id, maxOtherHeader)
	set(events.CallbackHeaderReceivedAt, d.at.Format(time.RFC3339Nano), maxOtherHeader)
	set(events.CallbackHeaderRemoteAddr, r.RemoteAddr, maxOtherHeader)
	set(events.CallbackHeaderForwardedFor, strings.Join(r.Header.Values("X-Forwarded-For"), ", "), maxOtherHeader)
	set(events.CallbackHeaderMethod, r.Method, maxOtherHeader)
	set(events.CallbackHeaderPath, r.RequestURI, maxPathHeader)
	set(events.CallbackHeaderContentType, r.Header.Get("Content-Type"), maxOtherHeader)
	set(events.CallbackHeaderShortcode, r.Header.Get("BusinessShortCode"), maxOtherHeader)
	set(events.CallbackHeaderTrackingID, trackingID, maxOtherHeader)
	return d
}

// keep stores the raw callback and waits for JetStream's ack: unmatched is
// an events.Unmatched* reason, or "" for a callback of a known payment, kept
// on stkcb.received.<id> (with note, if any, as its reason). It reports
// whether the copy is stored; if not, nothing else may be done with the
// callback, since we could not claim to have it.
func (h *handler) keep(r *http.Request, log *slog.Logger, d *delivery, unmatched, note string) bool {
	subject := events.CallbackSubjectReceived(d.trackingID)
	reason := note
	if unmatched != "" {
		subject = events.CallbackSubjectUnmatched(unmatched)
		reason = unmatched
	}
	return h.keepOn(r, log, d, subject, reason)
}

// keepOn is keep on a given subject, with reason (if any) as the copy's
// reason header.
func (h *handler) keepOn(r *http.Request, log *slog.Logger, d *delivery, subject, reason string) bool {
	msg := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: d.body}
	for k, v := range d.headers {
		msg.Header[k] = v
	}
	if reason != "" {
		msg.Header.Set(events.CallbackHeaderReason, reason)
	}
	if v := headerValue(d.detail, maxOtherHeader); v != "" {
		msg.Header.Set(events.CallbackHeaderDetail, v)
	}
	if d.cutFrom > 0 {
		msg.Header.Set(events.CallbackHeaderTruncated, strconv.Itoa(d.cutFrom))
	}
	ctx, cancel := h.opContext(r)
	defer cancel()
	ack, err := h.js.PublishMsg(ctx, msg,
		jetstream.WithMsgID(d.id),
		jetstream.WithExpectStream(events.CallbackStreamName))
	if err != nil {
		log.Error("keep callback: not stored, answering 503", "subject", subject, "bytes", len(d.body), "error", err)
		return false
	}
	log.Info("callback kept", "subject", subject, "reason", reason, "seq", ack.Sequence, "bytes", len(d.body))
	return true
}

// keepRefused keeps a callback refused before its token was verified on
// stkcb.unmatched.<reason> (an events.Unmatched* reason), its body cut to
// RefusedBodyBytes, while its source is within its storage rate
// (RefusedRate, RefusedBurst). Past it the callback is held back: not kept,
// logged once per run at warning level and otherwise at debug level, and
// stored is false, so that the caller logs no warning of its own either (a
// flood must not fill the logs instead). Like keep, ok is false only when a
// copy could not be stored.
func (h *handler) keepRefused(r *http.Request, log *slog.Logger, d *delivery, reason string) (stored, ok bool) {
	addr, valid := h.sources.Source(r)
	if allowed, first := h.refused.take(sourceKey(addr, valid), h.now()); !allowed {
		msg := "refused callback not kept: its source is over its storage rate"
		if first {
			log.Warn(msg+"; the next ones are logged at debug level until it slows down",
				"source", sourceForLog(addr, valid), "reason", reason, "rate_per_second", RefusedRate, "burst", RefusedBurst)
		} else {
			log.Debug(msg, "source", sourceForLog(addr, valid), "reason", reason)
		}
		return false, true
	}
	cut := *d
	if len(cut.body) > RefusedBodyBytes {
		cut.cutFrom = len(cut.body)
		cut.body = cut.body[:RefusedBodyBytes]
	}
	ok = h.keepOn(r, log, &cut, events.CallbackSubjectUnmatched(reason), reason)
	return ok, ok
}

// headerValue makes a request value safe for a NATS header: control
// characters (CR and LF would end the header) become spaces, and it is cut
// to limit bytes without splitting a character.
func headerValue(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// A callback refused before its token was verified (no token, a wrong one,
// no tracking id, a source outside CALLBACK_ALLOW_CIDRS, a body cut short)
// could come from anyone: its copy is cut to RefusedBodyBytes (a genuine
// callback is under 1 KiB, so it is kept whole), and each source (an IPv4
// address, an IPv6 /64) has such copies stored at most RefusedRate a second
// with bursts of RefusedBurst, and all sources together at most
// RefusedTotalRate a second with bursts of RefusedTotalBurst; past that they
// are answered as usual but not kept.
const (
	RefusedBodyBytes  = 2 << 10
	RefusedRate       = 5
	RefusedBurst      = 50
	RefusedTotalRate  = 50
	RefusedTotalBurst = 1000
)
