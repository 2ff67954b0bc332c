// Package deadletter keeps every STK message a consumer gave up on.
//
// JetStream tells of a message that used up a consumer's MaxDeliver, or that
// a consumer terminated as unprocessable, with an advisory; the
// STK_ADVISORIES stream stores them (see events.AdvisoryStreamConfig), so
// none is lost while the watcher is down. Run reads that stream through the
// durable "deadletter" consumer, fetches the original message from STK by
// its stream sequence and publishes a copy, body as-is, to STK_DLQ on
// stkdlq.<consumer>.<tracking_id> with headers saying why (events.DeadLetter*).
// The copy's Nats-Msg-Id is dlq:<consumer>:<stream_seq>, so handling an
// advisory twice stores one dead letter. Each dead letter is counted
// (Count, and the expvar "stkgate_dead_letters") and logged at error.
//
// JetStream also reports a message deleted from STK (by MaxAge, or by hand)
// while a consumer still held it unacknowledged as terminated, with reason
// "Unacknowledged message was deleted": that too becomes a dead letter, an
// empty one saying the original is missing.
//
// JetStream already moves on past such a message, so a poison message never
// blocks the others; the watcher only makes sure it is not forgotten.
// Several watchers may run at once: they share the durable consumer.
package deadletter

import (
	"context"
	"errors"
	"expvar"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/deadletter/advisory"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// deadLetters counts the dead letters this process stored (a repeat of one
// already stored is not counted). The STK_DLQ stream holds the total.
var deadLetters = expvar.NewInt("stkgate_dead_letters")

// Count is how many dead letters this process has stored since it started.
func Count() int64 { return deadLetters.Value() }

// Stored is how many dead letters STK_DLQ holds: the total of every
// watcher, for a readiness page or an alert.
func Stored(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(ctx, events.DeadLetterStreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("dead letters: %w", err)
	}
	return s.CachedInfo().State.Msgs, nil
}

// Defaults.
const (
	// DefaultRetryMaxDelay caps the wait before an advisory whose dead
	// letter could not be stored is tried again.
	DefaultRetryMaxDelay = 30 * time.Second
	// opTimeout bounds each NATS call.
	opTimeout = 10 * time.Second
)

// Config is what Run needs.
type Config struct {
	// JS is the JetStream context to use; required. The caller owns its
	// connection.
	JS jetstream.JetStream
	// Replicas of the STK_ADVISORIES and STK_DLQ streams (and of STK, which
	// Run makes sure exists), as NATS_STREAM_REPLICAS.
	Replicas int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// RetryMaxDelay caps the delay between attempts at an advisory; 0 means
	// DefaultRetryMaxDelay.
	RetryMaxDelay time.Duration
	// Metrics counts the dead letters; nil: not counted.
	Metrics *metrics.Registry
}

// Run watches for dead letters until ctx is cancelled, then returns nil. It
// waits for NATS at start-up and after any interruption; it returns an
// error only when JetStream refuses the streams or the consumer (bad
// configuration, which no wait mends).
func Run(ctx context.Context, cfg Config) error {
	if cfg.JS == nil {
		return errors.New("deadletter: Config.JS is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RetryMaxDelay <= 0 {
		cfg.RetryMaxDelay = DefaultRetryMaxDelay
	}
	w := &watcher{cfg: cfg, log: cfg.Logger.With("component", "deadletter")}
	cons, err := worker.RetryStart(ctx, w.log, "start dead-letter watcher", w.start)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("deadletter: %w", err)
	}
	w.log.Info("dead-letter watcher started")
	// One advisory at a time: they are rare.
	worker.Pool{Name: events.ConsumerDeadLetter, Concurrency: 1, Log: w.log, Recreate: w.start, Metrics: cfg.Metrics}.
		Run(ctx, cons, func(_, work context.Context, msg jetstream.Msg) { w.handle(work, msg) })
	return nil
}

type watcher struct {
	cfg Config
	log *slog.Logger
	stk jetstream.Stream
}

// start makes sure the streams and the consumer exist, and returns the
// consumer. The Pool calls it again when the consumer is deleted, between
// advisories: w.stk is never read meanwhile.
func (w *watcher) start(ctx context.Context) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	// The advisory stream first: advisories raised before it exists are
	// lost.
	if _, err := events.EnsureAdvisoryStream(ctx, w.cfg.JS, w.cfg.Replicas); err != nil {
		return nil, err
	}
	if _, err := events.EnsureDeadLetterStream(ctx, w.cfg.JS, w.cfg.Replicas); err != nil {
		return nil, err
	}
	stk, err := events.EnsureStream(ctx, w.cfg.JS, w.cfg.Replicas)
	if err != nil {
		return nil, err
	}
	cons, err := w.cfg.JS.CreateOrUpdateConsumer(ctx, events.AdvisoryStreamName, events.DeadLetterConsumer())
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", events.ConsumerDeadLetter, err)
	}
	w.stk = stk
	return cons, nil
}

// handle turns one advisory into a dead letter, and acks it once the dead
// letter is stored; on failure it is tried again after a delay, while the
// advisories behind it go on.
func (w *watcher) handle(ctx context.Context, msg jetstream.Msg) {
	a, kind, err := advisory.Parse(msg.Subject(), msg.Data())
	if err != nil {
		// Not from JetStream, or from a server that writes them otherwise:
		// no retry will read it, and it is kept in STK_ADVISORIES.
		w.log.Error("unreadable advisory; terminated", "tracking_id", "", "subject", msg.Subject(), "error", err)
		if err := msg.TermWithReason("unreadable advisory"); err != nil {
			w.log.Warn("term advisory", "tracking_id", "", "error", err)
		}
		return
	}
	log := w.log.With("consumer", a.Consumer, "stream_seq", a.StreamSeq, "reason", kind)

	dl, trackingID, err := w.deadLetter(ctx, a, kind)
	log = log.With("tracking_id", trackingID) // "" while the original is unread
	if err == nil {
		var ack *jetstream.PubAck
		if ack, err = w.publish(ctx, dl, a); err == nil {
			w.stored(log, msg, dl, a, ack)
			return
		}
	}
	delay := w.retryDelay(msg)
	log.Error("dead letter not stored; retrying", "retry_in", delay, "error", err)
	if err := msg.NakWithDelay(delay); err != nil {
		log.Warn("nak advisory", "error", err)
	}
}

// stored counts and logs a dead letter JetStream took, and acks its
// advisory.
func (w *watcher) stored(log *slog.Logger, msg jetstream.Msg, dl *nats.Msg, a advisory.Advisory, ack *jetstream.PubAck) {
	if ack.Duplicate {
		log.Info("dead letter already stored")
	} else {
		deadLetters.Add(1)
		w.cfg.Metrics.DeadLetter(a.Consumer, reasonOf(a))
		log.Error("message dead-lettered: a consumer gave up on it",
			"subject", dl.Header.Get(events.DeadLetterHeaderSubject),
			"deliveries", a.Deliveries,
			"term_reason", a.Reason,
			"dlq_subject", dl.Subject,
			"dlq_seq", ack.Sequence,
			"dead_letters", deadLetters.Value())
	}
	if err := msg.Ack(); err != nil {
		// Redelivered later; the dead letter is stored once.
		log.Warn("ack advisory", "error", err)
	}
}

// reasonOf names why a consumer gave up, for the metrics.
func reasonOf(a advisory.Advisory) string {
	if a.Type == advisory.TypeMaxDeliveries {
		return "max_deliveries"
	}
	return "terminated"
}

// deadLetter builds the dead letter of the message an advisory is about.
// A message no longer in STK (aged out, deleted) still gets one, empty,
// saying so: the count and the record matter more than the body.
func (w *watcher) deadLetter(ctx context.Context, a advisory.Advisory, kind string) (*nats.Msg, string, error) {
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	orig, err := w.stk.GetMsg(gctx, a.StreamSeq)
	missing := ""
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		missing = "not in stream " + events.StreamName
		orig = &jetstream.RawStreamMsg{Sequence: a.StreamSeq}
	case err != nil:
		return nil, "", fmt.Errorf("get %s message %d: %w", events.StreamName, a.StreamSeq, err)
	}
	trackingID := events.DeadLetterUnknownTrackingID
	if orig.Subject != "" {
		trackingID = events.TrackingIDOf(orig.Subject)
	}
	dl := &nats.Msg{
		Subject: events.DeadLetterSubject(a.Consumer, trackingID),
		Header:  nats.Header{},
		Data:    orig.Data,
	}
	set := func(k, v string) {
		if v != "" {
			dl.Header.Set(k, v)
		}
	}
	set(events.DeadLetterHeaderReason, kind)
	set(events.DeadLetterHeaderTermReason, oneLine(a.Reason))
	set(events.DeadLetterHeaderConsumer, a.Consumer)
	set(events.DeadLetterHeaderStream, a.Stream)
	set(events.DeadLetterHeaderStreamSeq, strconv.FormatUint(a.StreamSeq, 10))
	set(events.DeadLetterHeaderDeliveries, strconv.FormatUint(a.Deliveries, 10))
	set(events.DeadLetterHeaderSubject, orig.Subject)
	set(events.DeadLetterHeaderTrackingID, trackingID)
	set(events.DeadLetterHeaderMissing, missing)
	if !orig.Time.IsZero() {
		set(events.DeadLetterHeaderPublishedAt, orig.Time.UTC().Format(time.RFC3339Nano))
	}
	if !a.Time.IsZero() {
		set(events.DeadLetterHeaderAdvisoryAt, a.Time.UTC().Format(time.RFC3339Nano))
	}
	if orig.Header != nil {
		set(events.DeadLetterHeaderOriginalID, orig.Header.Get(jetstream.MsgIDHeader))
	}
	return dl, trackingID, nil
}

// publish stores a dead letter, recreating STK_DLQ if it has gone.
func (w *watcher) publish(ctx context.Context, dl *nats.Msg, a advisory.Advisory) (*jetstream.PubAck, error) {
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ack, err := w.cfg.JS.PublishMsg(pctx, dl,
		jetstream.WithMsgID(events.DeadLetterMsgID(a.Consumer, a.StreamSeq)),
		jetstream.WithExpectStream(events.DeadLetterStreamName))
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		// Nobody stores stkdlq.>: make the stream again for the next try.
		if _, serr := events.EnsureDeadLetterStream(pctx, w.cfg.JS, w.cfg.Replicas); serr != nil {
			w.log.Warn("recreate "+events.DeadLetterStreamName, "tracking_id", "", "error", serr)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", dl.Subject, err)
	}
	return ack, nil
}

// retryDelay doubles with each delivery of the advisory, up to the cap.
func (w *watcher) retryDelay(msg jetstream.Msg) time.Duration {
	n := uint64(1)
	if md, err := msg.Metadata(); err == nil {
		n = md.NumDelivered
	}
	d := w.cfg.RetryMaxDelay / 64
	for i := uint64(1); i < n && d < w.cfg.RetryMaxDelay; i++ {
		d *= 2
	}
	return min(d, w.cfg.RetryMaxDelay)
}

// oneLine keeps a term reason (free text from a consumer) fit for a header.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 1024 {
		s = s[:1024]
	}
	return strings.TrimSpace(s)
}
