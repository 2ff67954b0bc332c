package admin

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
)

// defaultStuckAfter is how long a consumer with work waiting may go without
// acking anything before lag calls it stuck. The reconcilers hold messages
// on purpose (their timers), but ack some all the time under traffic.
const defaultStuckAfter = 5 * time.Minute

// lagRow is one durable consumer's state, as lag --json writes it.
type lagRow struct {
	Stream        string     `json:"stream"`
	Consumer      string     `json:"consumer"`
	Filter        string     `json:"filter,omitempty"`
	Pending       uint64     `json:"pending"`
	AckPending    int        `json:"ack_pending"`
	Redelivered   int        `json:"redelivered"`
	Waiting       int        `json:"waiting"`
	DeliveredSeq  uint64     `json:"last_delivered_seq"`
	DeliveredAt   *time.Time `json:"last_delivered_at,omitempty"`
	AckFloorSeq   uint64     `json:"ack_floor_seq"`
	AckFloorAt    *time.Time `json:"ack_floor_at,omitempty"`
	StreamLastSeq uint64     `json:"stream_last_seq"`
	Stuck         bool       `json:"stuck"`
	State         string     `json:"state"`
}

func (c *cmd) lag(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lag", flag.ContinueOnError)
	failAbove := fs.Int64("fail-above", -1, "exit 1 when a consumer has more than N pending")
	stuckAfter := fs.Duration("stuck-after", defaultStuckAfter, "call a consumer with work waiting and no ack for this long stuck")
	asJSON := fs.Bool("json", false, "JSON for machines")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	if *stuckAfter <= 0 {
		return usageErrorf("--stuck-after must be positive")
	}
	rows, err := c.lagRows(ctx, *stuckAfter, time.Now())
	if err != nil {
		return err
	}
	if *asJSON {
		if err := writeJSON(c, rows); err != nil {
			return err
		}
	} else {
		w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "STREAM\tCONSUMER\tPENDING\tACK PENDING\tREDELIVERED\tWAITING\tLAST DELIVERED\tACK FLOOR\tSTATE")
		for _, r := range rows {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", r.Stream, r.Consumer, r.Pending, r.AckPending,
				r.Redelivered, r.Waiting, seqAt(r.DeliveredSeq, r.DeliveredAt), seqAt(r.AckFloorSeq, r.AckFloorAt), r.State)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	if *failAbove >= 0 {
		var over []string
		for _, r := range rows {
			if r.Pending > uint64(*failAbove) {
				over = append(over, fmt.Sprintf("%s/%s (%d)", r.Stream, r.Consumer, r.Pending))
			}
		}
		if len(over) > 0 {
			fmt.Fprintf(c.stderr, "stkgate-admin: pending above %d: %s\n", *failAbove, strings.Join(over, ", "))
			return &failError{}
		}
	}
	return nil
}

// lagRows is every durable consumer of the project's streams (STK and
// the others stkgate makes, STK_*), by stream and name.
func (c *cmd) lagRows(ctx context.Context, stuckAfter time.Duration, now time.Time) ([]lagRow, error) {
	var rows []lagRow
	names := c.js.StreamNames(ctx)
	for name := range names.Name() {
		if name != events.StreamName && !strings.HasPrefix(name, events.StreamName+"_") {
			continue
		}
		stream, err := c.js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		si, err := stream.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		infos := stream.ListConsumers(ctx)
		for ci := range infos.Info() {
			if ci.Config.Durable == "" {
				continue // an ordered consumer, such as this command's own
			}
			rows = append(rows, lagOf(si, ci, stuckAfter, now))
		}
		if err := infos.Err(); err != nil {
			return nil, fmt.Errorf("consumers of %s: %w", name, err)
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("streams: %w", err)
	}
	return rows, nil
}

// lagOf is a consumer's row. It is stuck when it has work (pending or
// unacknowledged) and has acked nothing for stuckAfter (nothing since it
// was created, if never).
func lagOf(si *jetstream.StreamInfo, ci *jetstream.ConsumerInfo, stuckAfter time.Duration, now time.Time) lagRow {
	r := lagRow{
		Stream: si.Config.Name, Consumer: ci.Name, Filter: strings.Join(append([]string{ci.Config.FilterSubject}, ci.Config.FilterSubjects...), " "),
		Pending: ci.NumPending, AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered, Waiting: ci.NumWaiting,
		DeliveredSeq: ci.Delivered.Stream, DeliveredAt: ci.Delivered.Last,
		AckFloorSeq: ci.AckFloor.Stream, AckFloorAt: ci.AckFloor.Last,
		StreamLastSeq: si.State.LastSeq,
	}
	r.Filter = strings.TrimSpace(r.Filter)
	busy := r.Pending > 0 || r.AckPending > 0
	since := ci.Created
	if r.AckFloorAt != nil && r.AckFloorAt.After(since) {
		since = *r.AckFloorAt
	}
	switch {
	case !busy:
		r.State = "ok"
	case now.Sub(since) >= stuckAfter:
		r.Stuck = true
		r.State = "stuck: no ack for " + now.Sub(since).Round(time.Second).String()
		if r.Waiting == 0 && !ci.PushBound && ci.Config.DeliverSubject == "" {
			r.State += ", nobody pulling"
		}
	default:
		r.State = "behind"
	}
	return r
}

// seqAt is "seq (age)", "-" for none.
func seqAt(seq uint64, at *time.Time) string {
	if seq == 0 {
		return "-"
	}
	if at == nil || at.IsZero() {
		return fmt.Sprint(seq)
	}
	return fmt.Sprintf("%d (%s ago)", seq, time.Since(*at).Round(time.Second))
}
