package admin

// rebuild-read-model's copy: the rebuild's own database handle, the live
// rows the stream lacks, and the stream's events applied to the rebuilt table.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/projector"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/redact"
)

// unstreamedTable lists, in the rebuild schema, the tracking ids of the
// unstreamed payments: the live rows at the rebuild's start whose
// stk.requested the stream does not hold (aged out after
// events.RequestRetention, or never there: a row written by hand), and
// the live rows the swap finds that no event made.
const unstreamedTable = rebuildSchema + ".rebuild_unstreamed"

// seedUnstreamed puts the live rows of the unstreamed payments into the
// rebuilt table before any event: as they are, id and updated_at too.
//
// A payment that lost only part of its history to the stream's retention
// (its request, say, but not a late result) would otherwise be rebuilt
// from what is left, a final payment back at Pending; with its live row
// first, the events left are applied on top by the projector's rules,
// which never undo an outcome. And its receipt and CheckoutRequestID are
// claimed from the start, so that a later completion naming them is
// rewritten during the copy as the projector rewrote it, instead of
// failing the swap on the unique index (or, with --drop-unstreamed,
// making the later payment paid with the old one's receipt).
//
// The live table's ids are read before the stream's subjects: a payment
// the projector writes meanwhile has its stk.requested stored already.
func (r *rebuilder) seedUnstreamed(ctx context.Context, conn *sqlx.Conn, stream jetstream.Stream) error {
	if _, err := conn.ExecContext(ctx, `CREATE TABLE `+unstreamedTable+` (tracking_id uuid PRIMARY KEY)`); err != nil {
		return fmt.Errorf("rebuild: unstreamed payments: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO `+unstreamedTable+` SELECT tracking_id FROM `+r.liveTable()); err != nil {
		return fmt.Errorf("rebuild: unstreamed payments: %w", err)
	}
	// The subjects alone: JetStream counts them without sending a message.
	prefix := events.TypeRequested + "."
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return fmt.Errorf("rebuild: stream %s: %w", events.StreamName, err)
	}
	streamed := make([]string, 0, 10000)
	flush := func() error {
		if len(streamed) == 0 {
			return nil
		}
		_, err := conn.ExecContext(ctx, `DELETE FROM `+unstreamedTable+` WHERE tracking_id = ANY($1::uuid[])`, pq.Array(streamed))
		streamed = streamed[:0]
		if err != nil {
			return fmt.Errorf("rebuild: unstreamed payments: %w", err)
		}
		return nil
	}
	for subj := range info.State.Subjects {
		// A subject that names no UUID made no row.
		id, err := uuid.Parse(strings.TrimPrefix(subj, prefix))
		if err != nil {
			continue
		}
		if streamed = append(streamed, id.String()); len(streamed) == cap(streamed) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	cols := r.eventCols("l") + ", l.id, l.updated_at"
	if _, err := conn.ExecContext(ctx, `INSERT INTO `+rebuildSchema+`.stk_pushes (`+strings.ReplaceAll(cols, "l.", "")+`)
		SELECT `+cols+` FROM `+r.liveTable()+` l JOIN `+unstreamedTable+` u ON u.tracking_id = l.tracking_id`); err != nil {
		return fmt.Errorf("rebuild: put in the unstreamed payments: %w", err)
	}
	return nil
}

// openRebuildDB opens a pool whose every connection sees only the rebuild
// schema: an unqualified stk_pushes there is never the live one.
func (r *rebuilder) openRebuildDB(ctx context.Context) error {
	cfg, err := pq.NewConfig(r.dbURL)
	if err != nil {
		// The error may quote the URL, password and all.
		return fmt.Errorf("rebuild: DATABASE_URL: %s", redact.URLs(err.Error()))
	}
	if cfg.Runtime == nil {
		cfg.Runtime = map[string]string{}
	}
	cfg.Runtime["search_path"] = rebuildSchema
	connector, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return fmt.Errorf("rebuild: DATABASE_URL: %s", redact.URLs(err.Error()))
	}
	r.rdb = sqlx.NewDb(sql.OpenDB(connector), "postgres")
	r.rdb.SetMaxOpenConns(4)
	var path string
	if err := r.rdb.GetContext(ctx, &path, `SELECT current_setting('search_path')`); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	if path != rebuildSchema {
		// An options=-c search_path=… in DATABASE_URL won: refuse rather
		// than write where the live table may be.
		return fmt.Errorf("rebuild: the rebuild's connections have search_path %q, want %q (does DATABASE_URL set one?)", path, rebuildSchema)
	}
	r.rstore = store.New(r.rdb).WithLogger(slog.New(slog.DiscardHandler))
	return nil
}

// copyStream applies the STK stream's messages from sequence from to to
// (both included) to the rebuilt table.
func (r *rebuilder) copyStream(ctx context.Context, from, to uint64) error {
	if to < from || to == 0 {
		return nil
	}
	cons, err := r.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectAll},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
	}
	var batch []events.Event
	flush := func() error {
		err := r.applyBatch(ctx, batch)
		batch = batch[:0]
		return err
	}
	var lastSeen uint64
	for idle := 0; ; {
		msgs, err := cons.Fetch(rebuildBatch, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
		}
		n := 0
		done := false
		for m := range msgs.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
			}
			lastSeen = md.Sequence.Stream
			if md.Sequence.Stream > to {
				done = true
				break
			}
			r.rep.events++
			ev, err := projector.Decode(m.Subject(), m.Data())
			if err != nil {
				// The projector terminated it too.
				r.rep.malformed++
			} else {
				batch = append(batch, ev)
			}
			if md.Sequence.Stream == to {
				// The rest of the fetch would only be waited for.
				done = true
				break
			}
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
		}
		if err := flush(); err != nil {
			return err
		}
		if done {
			return nil
		}
		if n > 0 {
			idle = 0
			continue
		}
		// Nothing came: the messages up to to may have aged out meanwhile.
		info, err := r.js.Stream(ctx, events.StreamName)
		if err != nil {
			return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
		}
		st, err := info.Info(ctx)
		if err != nil {
			return fmt.Errorf("rebuild: read %s: %w", events.StreamName, err)
		}
		if st.State.FirstSeq > to || st.State.Msgs == 0 || lastSeen >= min(to, st.State.LastSeq) {
			return nil
		}
		if idle++; idle > 5 {
			return fmt.Errorf("rebuild: read %s: no message came for 10s before sequence %d", events.StreamName, to)
		}
	}
}

// applyBatch applies evs as the projector applies a batch: together, or,
// when one of them can never be applied (store.IsPermanent), one by one,
// leaving out those the projector terminates.
func (r *rebuilder) applyBatch(ctx context.Context, evs []events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	err := r.rstore.Apply(ctx, evs)
	if err == nil {
		r.rep.applied += len(evs)
		return nil
	}
	if !store.IsPermanent(err) {
		return fmt.Errorf("rebuild: %w", err)
	}
	for _, ev := range evs {
		err := r.rstore.Apply(ctx, []events.Event{ev})
		switch {
		case err == nil:
			r.rep.applied++
		case store.IsPermanent(err):
			r.rep.rejected++
		default:
			return fmt.Errorf("rebuild: %w", err)
		}
	}
	return nil
}

// eventCols is "t.a, t.b, …" for the rebuilt table's columns but id and
// updated_at: what the events decide.
func (r *rebuilder) eventCols(alias string) string {
	q := make([]string, len(r.cols))
	for i, c := range r.cols {
		q[i] = alias + "." + pq.QuoteIdentifier(c)
	}
	return strings.Join(q, ", ")
}
