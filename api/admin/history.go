package admin

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/admin/mask"
	"github.com/stkgate/stkgate/events"
)

// entry is one thing of a payment's history.
type entry struct {
	At      time.Time `json:"at"`
	Source  string    `json:"source"` // the stream or bucket it is kept in
	Seq     uint64    `json:"seq,omitempty"`
	Subject string    `json:"subject,omitempty"`
	Kind    string    `json:"kind"`
	Summary string    `json:"summary"`
	// Headers of a kept callback or dead letter (the path's token
	// redacted); Body is the message, phones masked, absent when it is not
	// JSON.
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
}

// historyJSON is what history --json writes.
type historyJSON struct {
	TrackingID string  `json:"tracking_id"`
	History    []entry `json:"history"`
}

// history is history [--json] TRACKING_ID: everything kept of the payment
// (historyOf), oldest first, as a table (printHistory) or as JSON.
func (c *cmd) history(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "JSON for machines, with each message's body")
	pos, err := parse(fs, args, 1, "TRACKING_ID")
	if err != nil {
		return err
	}
	u, err := uuid.Parse(pos[0])
	if err != nil {
		return usageErrorf("TRACKING_ID is not a UUID")
	}
	id := u.String()
	es, err := c.historyOf(ctx, id)
	if err != nil {
		return err
	}
	sort.SliceStable(es, func(i, j int) bool { return es[i].At.Before(es[j].At) })
	if len(es) == 0 {
		return fmt.Errorf("nothing is kept of payment %s", id)
	}
	if *asJSON {
		return writeJSON(c, historyJSON{id, es})
	}
	return c.printHistory(es)
}

// historyOf is what is kept of payment id: its events, pushes, kept
// callbacks and dead letters in their streams, and its attempt record as it
// is now (attemptEntry).
func (c *cmd) historyOf(ctx context.Context, id string) ([]entry, error) {
	var es []entry
	add := func(source string, m jetstream.Msg, kind, summary string, headers map[string]string, body ...json.RawMessage) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		b := mask.JSON(m.Data())
		if len(body) > 0 {
			b = body[0]
		}
		es = append(es, entry{At: md.Timestamp.UTC(), Source: source, Seq: md.Sequence.Stream, Subject: m.Subject(),
			Kind: kind, Summary: summary, Headers: headers, Body: b})
		return nil
	}
	read := func(stream string, filters []string, fn func(jetstream.Msg) error) error {
		_, err := readSubjects(ctx, c.js, stream, filters, fn)
		return err
	}
	// Its events, on every stk.<type>.<id>.
	if err := read(events.StreamName, []string{"stk.*." + id}, func(m jetstream.Msg) error {
		_, ev, err := events.Decode(m.Data())
		if err != nil {
			return add(events.StreamName, m, "malformed", oneLine(err.Error()), nil)
		}
		return add(events.StreamName, m, ev.Type(), eventSummary(ev), nil)
	}); err != nil {
		return nil, err
	}
	// Its pushes: the attempt record as each push left.
	if err := read(events.PushLogStreamName, []string{events.PushLogSubject(id)}, func(m jetstream.Msg) error {
		var a events.Attempt
		if err := json.Unmarshal(m.Data(), &a); err != nil {
			return add(events.PushLogStreamName, m, "push", "unreadable: "+oneLine(err.Error()), nil)
		}
		return add(events.PushLogStreamName, m, "push", fmt.Sprintf("push call %d sent", a.Calls), nil, attemptBody(a))
	}); err != nil {
		return nil, err
	}
	// Its kept callbacks: applied, held for confirmation, refused with a
	// valid token. (A callback refused before its tracking id was known is
	// on stkcb.unmatched.<reason>, not here.)
	if err := read(events.CallbackStreamName, []string{events.CallbackSubjectReceived(id), events.CallbackSubjectConfirm(id),
		events.CallbackSubjectRefused("*", id)}, func(m jetstream.Msg) error {
		h := map[string]string{}
		for k := range m.Headers() {
			// A detail may quote the body: no phone number shows.
			h[k] = mask.Text(m.Headers().Get(k))
		}
		if p, ok := h[events.CallbackHeaderPath]; ok {
			h[events.CallbackHeaderPath] = mask.Path(p)
		}
		return add(events.CallbackStreamName, m, "callback", callbackSummary(m, h), h)
	}); err != nil {
		return nil, err
	}
	// Its dead letters.
	if err := read(events.DeadLetterStreamName, []string{events.DeadLetterSubject("*", id)}, func(m jetstream.Msg) error {
		h := m.Headers()
		return add(events.DeadLetterStreamName, m, "dead letter", fmt.Sprintf("%s gave up on %s (%s:%s): %s %s",
			h.Get(events.DeadLetterHeaderConsumer), h.Get(events.DeadLetterHeaderSubject), h.Get(events.DeadLetterHeaderStream),
			h.Get(events.DeadLetterHeaderStreamSeq), h.Get(events.DeadLetterHeaderReason), mask.Digits(h.Get(events.DeadLetterHeaderTermReason))), nil)
	}); err != nil {
		return nil, err
	}
	// Its attempt record, as it is now.
	a, found, err := c.attemptEntry(ctx, id)
	if err != nil {
		return nil, err
	}
	if found {
		es = append(es, a)
	}
	return es, nil
}

// attemptEntry is the payment's attempt record as it is now; found false
// when there is none (or no bucket).
func (c *cmd) attemptEntry(ctx context.Context, id string) (e entry, found bool, err error) {
	kv, err := c.js.KeyValue(ctx, events.AttemptsBucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
	case err != nil:
		return entry{}, false, fmt.Errorf("bucket %s: %w", events.AttemptsBucket, err)
	default:
		a, rev, found, err := events.GetAttempt(ctx, kv, id)
		switch {
		case err != nil && !errors.Is(err, events.ErrMalformed):
			return entry{}, false, err
		case err != nil:
			return entry{Source: events.AttemptsBucket, Seq: rev, Kind: "attempt", Summary: "unreadable: " + oneLine(err.Error())}, true, nil
		case found:
			return entry{At: a.UpdatedAt.UTC(), Source: events.AttemptsBucket, Seq: rev, Kind: "attempt",
				Summary: attemptSummary(a), Body: attemptBody(a)}, true, nil
		}
	}
	return entry{}, false, nil
}

// printHistory writes es as a table.
func (c *cmd) printHistory(es []entry) error {
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tWHERE\tWHAT\tDETAIL")
	for _, e := range es {
		where := e.Source
		if e.Seq > 0 {
			where = fmt.Sprintf("%s:%d", e.Source, e.Seq)
		}
		at := "-"
		if !e.At.IsZero() {
			at = e.At.Format("2006-01-02 15:04:05.000Z")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", at, where, e.Kind, e.Summary)
	}
	return w.Flush()
}

// eventSummary is an event in a line, its phone masked.
func eventSummary(ev events.Event) string {
	p := ev.Base()
	switch e := ev.(type) {
	case events.Requested:
		s := fmt.Sprintf("client %s, %d KES from %s, reference %q", p.Client, p.Amount, events.MaskPhone(p.Phone), p.Reference)
		if p.Tag != "" {
			s += fmt.Sprintf(", tag %q", p.Tag)
		}
		return s
	case events.Dispatched:
		return fmt.Sprintf("accepted by Daraja: CheckoutRequestID %s", e.CheckoutRequestID)
	case events.Completed:
		_, label := events.Outcome(e.ResultCode)
		s := fmt.Sprintf("%s by %s: %s %q", label, e.Source, e.ResultCode, mask.Digits(e.ResultDesc))
		if e.Receipt != "" {
			s += ", receipt " + e.Receipt
		}
		return s
	case events.LateResult:
		s := fmt.Sprintf("Daraja's word after %s, by %s: %s %q", e.FollowsCode, e.Source, e.ResultCode, mask.Digits(e.ResultDesc))
		if e.Receipt != "" {
			s += ", receipt " + e.Receipt
		}
		return s
	}
	return ev.Type()
}

// callbackSummary is a kept callback in a line: where it is kept and why,
// and its result.
func callbackSummary(m jetstream.Msg, h map[string]string) string {
	kind := strings.TrimPrefix(m.Subject(), "stkcb.")
	kind = kind[:strings.IndexByte(kind, '.')]
	s := kind
	if r := h[events.CallbackHeaderReason]; r != "" {
		s += " (" + r + ")"
	}
	var cb struct {
		Body struct {
			StkCallback struct {
				CheckoutRequestID string
				ResultCode        json.Number
				ResultDesc        string
			} `json:"stkCallback"`
		} `json:"Body"`
	}
	if json.Unmarshal(m.Data(), &cb) == nil && cb.Body.StkCallback.ResultCode != "" {
		k := cb.Body.StkCallback
		s += fmt.Sprintf(": ResultCode %s %q, CheckoutRequestID %s", k.ResultCode, mask.Digits(k.ResultDesc), k.CheckoutRequestID)
	}
	if a := h[events.CallbackHeaderRemoteAddr]; a != "" {
		s += ", from " + a
	}
	return s
}

func attemptSummary(a events.Attempt) string {
	s := fmt.Sprintf("now %s after %d call(s)", a.State, a.Calls)
	if a.CheckoutRequestID != "" {
		s += ", CheckoutRequestID " + a.CheckoutRequestID
	}
	if a.ErrorCode != "" || a.ErrorMessage != "" {
		s += fmt.Sprintf(", last error %s %q", a.ErrorCode, mask.Digits(a.ErrorMessage))
	}
	if a.Uncertain {
		s += ", uncertain"
	}
	return s
}

// oneLine is s on one line, cut to 200 bytes.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// attemptBody is an attempt record as history --json shows it: Daraja's
// error text, which may quote the phone, masked as in the summary.
func attemptBody(a events.Attempt) json.RawMessage {
	a.ErrorMessage = mask.Digits(a.ErrorMessage)
	b, err := json.Marshal(a)
	if err != nil {
		return nil
	}
	return mask.JSON(b)
}
