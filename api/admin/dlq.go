package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/admin/mask"
	"github.com/stkgate/stkgate/events"
)

// deadLetter is a message of STK_DLQ as dlq shows it.
type deadLetter struct {
	Seq        uint64            `json:"seq"`
	StoredAt   time.Time         `json:"stored_at"`
	Consumer   string            `json:"consumer"`
	Reason     string            `json:"reason"`
	TermReason string            `json:"term_reason,omitempty"`
	TrackingID string            `json:"tracking_id"`
	Stream     string            `json:"original_stream,omitempty"`
	StreamSeq  uint64            `json:"original_seq,omitempty"`
	Subject    string            `json:"original_subject,omitempty"`
	MsgID      string            `json:"original_msg_id,omitempty"`
	Deliveries string            `json:"deliveries,omitempty"`
	Missing    string            `json:"original_missing,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	// Body is the original message's, phones masked; absent when it is
	// not JSON.
	Body json.RawMessage `json:"body,omitempty"`
}

func deadLetterOf(seq uint64, at time.Time, h nats.Header, data []byte, full bool) deadLetter {
	d := deadLetter{
		Seq: seq, StoredAt: at.UTC(),
		Consumer:   h.Get(events.DeadLetterHeaderConsumer),
		Reason:     h.Get(events.DeadLetterHeaderReason),
		TermReason: mask.Digits(h.Get(events.DeadLetterHeaderTermReason)),
		TrackingID: h.Get(events.DeadLetterHeaderTrackingID),
		Stream:     h.Get(events.DeadLetterHeaderStream),
		Subject:    h.Get(events.DeadLetterHeaderSubject),
		MsgID:      h.Get(events.DeadLetterHeaderOriginalID),
		Deliveries: h.Get(events.DeadLetterHeaderDeliveries),
		Missing:    h.Get(events.DeadLetterHeaderMissing),
	}
	d.StreamSeq, _ = strconv.ParseUint(h.Get(events.DeadLetterHeaderStreamSeq), 10, 64)
	if full {
		d.Headers = map[string]string{}
		for k := range h {
			d.Headers[k] = mask.Text(h.Get(k))
		}
		d.Body = mask.JSON(data)
	}
	return d
}

func (c *cmd) dlqList(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dlq list", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "JSON for machines")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	var dls []deadLetter
	found, err := readSubjects(ctx, c.js, events.DeadLetterStreamName, []string{events.DeadLetterSubjectAll}, func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		dls = append(dls, deadLetterOf(md.Sequence.Stream, md.Timestamp, m.Headers(), nil, false))
		return nil
	})
	if err != nil {
		return err
	}
	if !found {
		fmt.Fprintf(c.stderr, "no stream %s: no dead letter was ever kept\n", events.DeadLetterStreamName)
	}
	if *asJSON {
		return writeJSON(c, dls)
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SEQ\tSTORED\tCONSUMER\tREASON\tTRACKING ID\tORIGINAL\tDELIVERIES")
	for _, d := range dls {
		orig := d.Subject
		if d.StreamSeq > 0 {
			orig = fmt.Sprintf("%s %s:%d", d.Subject, d.Stream, d.StreamSeq)
		}
		if d.Missing != "" {
			orig = fmt.Sprintf("(%s) %s:%d", d.Missing, d.Stream, d.StreamSeq)
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Seq, stamp(d.StoredAt), d.Consumer, d.Reason, d.TrackingID, orig, d.Deliveries)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "%d dead letter(s)\n", len(dls))
	return nil
}

// dlqSeq parses the one argument SEQ.
func dlqSeq(fs *flag.FlagSet, args []string) (uint64, error) {
	pos, err := parse(fs, args, 1, "SEQ (a dead letter's sequence, as dlq list shows it)")
	if err != nil {
		return 0, err
	}
	seq, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil || seq == 0 {
		return 0, usageErrorf("SEQ %q is not a sequence number", pos[0])
	}
	return seq, nil
}

// getDeadLetter reads dead letter seq.
func (c *cmd) getDeadLetter(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	s, err := c.js.Stream(ctx, events.DeadLetterStreamName)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", events.DeadLetterStreamName, err)
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("no dead letter %d in %s", seq, events.DeadLetterStreamName)
	}
	if err != nil {
		return nil, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return m, nil
}

func (c *cmd) dlqShow(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dlq show", flag.ContinueOnError)
	seq, err := dlqSeq(fs, args)
	if err != nil {
		return err
	}
	m, err := c.getDeadLetter(ctx, seq)
	if err != nil {
		return err
	}
	d := deadLetterOf(m.Sequence, m.Time, m.Header, m.Data, true)
	fmt.Fprintf(c.stdout, "dead letter %d, stored %s on %s\n", d.Seq, stamp(d.StoredAt), m.Subject)
	keys := make([]string, 0, len(d.Headers))
	for k := range d.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(c.stdout, "%s: %s\n", k, d.Headers[k])
	}
	switch {
	case len(m.Data) == 0:
		fmt.Fprintln(c.stdout, "\n(no body)")
	case d.Body == nil:
		fmt.Fprintf(c.stdout, "\n(a body of %d bytes that is not JSON; not shown)\n", len(m.Data))
	default:
		fmt.Fprintf(c.stdout, "\n%s\n", d.Body)
	}
	return nil
}

func (c *cmd) dlqReplay(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dlq replay", flag.ContinueOnError)
	yes := fs.Bool("yes", false, "replay it: without it, replay only says what it would do")
	seq, err := dlqSeq(fs, args)
	if err != nil {
		return err
	}
	m, err := c.getDeadLetter(ctx, seq)
	if err != nil {
		return err
	}
	d := deadLetterOf(m.Sequence, m.Time, m.Header, m.Data, false)
	switch {
	case d.Missing != "":
		return fmt.Errorf("dead letter %d has no original to replay (%s)", seq, d.Missing)
	case d.Stream != events.StreamName:
		return fmt.Errorf("dead letter %d is of stream %q, not %s: not replayed", seq, d.Stream, events.StreamName)
	case d.Subject == "" || events.TrackingIDOf(d.Subject) != d.TrackingID:
		return fmt.Errorf("dead letter %d has no original subject of its payment %s: not replayed", seq, d.TrackingID)
	case d.MsgID == "":
		// Without its id a replay could store the event twice.
		return fmt.Errorf("dead letter %d has no original Nats-Msg-Id: not replayed", seq)
	case d.StreamSeq == 0:
		return fmt.Errorf("dead letter %d has no original sequence in %s: not replayed", seq, events.StreamName)
	}
	// The dead letter is only a pointer: anyone who can publish to
	// stkdlq.> can write one. What is replayed is what the stream holds
	// at that sequence, and only when it is the message the dead letter
	// describes.
	orig, err := c.originalOf(ctx, seq, d, m.Data)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("replay dead letter %d: publish the original %s (%s:%d) of payment %s to %s again, Nats-Msg-Id %s; every consumer of that subject gets it again, not only %s",
		seq, d.Subject, d.Stream, d.StreamSeq, d.TrackingID, d.Subject, d.MsgID, d.Consumer)
	if !*yes {
		fmt.Fprintln(c.stderr, "would "+what)
		return errors.New("not replayed: add --yes to replay it")
	}
	ack, err := c.js.PublishMsg(ctx, &nats.Msg{Subject: orig.Subject, Data: orig.Data},
		jetstream.WithMsgID(d.MsgID), jetstream.WithExpectStream(events.StreamName))
	if err != nil {
		return fmt.Errorf("replay dead letter %d: %w", seq, err)
	}
	if ack.Duplicate {
		fmt.Fprintf(c.stdout, "dead letter %d not stored again: JetStream dropped it as a duplicate of %s:%d, published within the last %s (its duplicate window); replay it after that\n",
			seq, d.Stream, ack.Sequence, events.DuplicateWindow)
		return nil
	}
	fmt.Fprintf(c.stdout, "dead letter %d replayed as %s:%d on %s\n", seq, ack.Stream, ack.Sequence, d.Subject)
	return nil
}

// originalOf reads the original of dead letter seq from the STK stream and
// checks that it is the message d describes: its subject, its
// Nats-Msg-Id and body (the dead letter's copy of it) the same.
func (c *cmd) originalOf(ctx context.Context, seq uint64, d deadLetter, body []byte) (*jetstream.RawStreamMsg, error) {
	s, err := c.js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	orig, err := s.GetMsg(ctx, d.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("dead letter %d: its original %s:%d is not in the stream (aged out or deleted): not replayed", seq, events.StreamName, d.StreamSeq)
	}
	if err != nil {
		return nil, fmt.Errorf("dead letter %d: read %s:%d: %w", seq, events.StreamName, d.StreamSeq, err)
	}
	switch {
	case orig.Subject != d.Subject:
		return nil, fmt.Errorf("dead letter %d: %s:%d is on %s, not %s: not replayed", seq, events.StreamName, d.StreamSeq, orig.Subject, d.Subject)
	case orig.Header.Get(jetstream.MsgIDHeader) != d.MsgID:
		return nil, fmt.Errorf("dead letter %d: %s:%d has Nats-Msg-Id %s, not %s: not replayed", seq, events.StreamName, d.StreamSeq,
			orig.Header.Get(jetstream.MsgIDHeader), d.MsgID)
	case !bytes.Equal(orig.Data, body):
		return nil, fmt.Errorf("dead letter %d: its body is not %s:%d's: not replayed", seq, events.StreamName, d.StreamSeq)
	}
	return orig, nil
}

// writeJSON writes v to stdout, indented.
func writeJSON(c *cmd, v any) error {
	e := json.NewEncoder(c.stdout)
	e.SetIndent("", "  ")
	e.SetEscapeHTML(false) // subjects such as stk.> read as they are
	return e.Encode(v)
}
