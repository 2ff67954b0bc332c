package store_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events"
)

// foldWorld is one database seen whole: every column of every row but id
// and updated_at (the only ones now() or the insert order decide).
type foldWorld struct {
	db *sqlx.DB
	s  *store.Store
}

func newFoldWorld(t testing.TB) foldWorld {
	db := pgtest.New(t)
	return foldWorld{db: db, s: store.New(db)}
}

func (w foldWorld) apply(t testing.TB, evs []events.Event) {
	t.Helper()
	if len(evs) == 0 {
		return
	}
	if err := w.s.Apply(context.Background(), evs); err != nil {
		t.Fatalf("Apply(%d events): %v", len(evs), err)
	}
}

// rows maps tracking id to the row's columns but id (and, unless withTime,
// updated_at) as JSON.
func (w foldWorld) rows(t testing.TB, withTime bool) map[string]string {
	t.Helper()
	drop := "- 'id' - 'updated_at'"
	if withTime {
		drop = "- 'id'"
	}
	var got []struct {
		ID  string `db:"id"`
		Row string `db:"row"`
	}
	if err := w.db.Select(&got, `SELECT tracking_id::text AS id, (to_jsonb(t) `+drop+`)::text AS row FROM stk_pushes t`); err != nil {
		t.Fatalf("read rows: %v", err)
	}
	out := make(map[string]string, len(got))
	for _, g := range got {
		out[g.ID] = g.Row
	}
	return out
}

// foldEvents is a random set of one payment's events: all that its
// services may publish, with payment fields that are sometimes missing or
// differ from the request's, and Daraja ids of the push, of a retried
// push, or none.
func foldEvents(rng *rand.Rand) []events.Event {
	id := uuid.NewString()
	full := payment(id)
	variant := func() events.Payment {
		p := full
		switch rng.IntN(10) {
		case 0, 1: // a producer that knew only the tracking id (and when)
			p = events.Payment{TrackingID: id, RequestedAt: requestedAt}
		case 2, 3: // some fields missing
			if rng.IntN(2) == 0 {
				p.Client = ""
			}
			if rng.IntN(2) == 0 {
				p.Phone = ""
			}
			if rng.IntN(2) == 0 {
				p.Amount = 0
			}
			if rng.IntN(2) == 0 {
				p.Reference = ""
			}
			if rng.IntN(2) == 0 {
				p.Tag = ""
			}
		case 4: // differing fields
			p.Phone, p.Amount, p.Reference, p.Tag = "254799999999", 2500, "INV-other", "other-tag"
			p.RequestedAt = requestedAt.Add(time.Second)
		}
		return p
	}
	m, co := "29115-"+id, "ws_CO_"+id
	m2, co2 := m+"-retry", co+"-retry"
	rcpt := strings.ToUpper(strings.ReplaceAll(id, "-", ""))[:10]
	rcpt2 := strings.ToUpper(strings.ReplaceAll(id, "-", ""))[10:20]
	completed := func(code, desc, receipt, src, mid, cid string) events.Completed {
		c := events.Completed{Payment: variant(), ResultCode: code, ResultDesc: desc, Source: src,
			MerchantRequestID: mid, CheckoutRequestID: cid, CompletedAt: requestedAt.Add(time.Minute)}
		if receipt != "" {
			c.Receipt, c.TransactionDate = receipt, "2024-03-21 14:30:55"
		}
		return c
	}
	kinds := []func() events.Event{
		func() events.Event { return events.Requested{Payment: variant()} },
		func() events.Event { return events.Requested{Payment: variant()} },
		func() events.Event {
			return events.Dispatched{Payment: variant(), MerchantRequestID: m, CheckoutRequestID: co}
		},
		func() events.Event {
			return events.Dispatched{Payment: variant(), MerchantRequestID: m, CheckoutRequestID: co}
		},
		func() events.Event {
			return events.Dispatched{Payment: variant(), MerchantRequestID: m2, CheckoutRequestID: co2}
		},
		func() events.Event { return completed("0", "processed", rcpt, events.SourceCallback, m, co) },
		func() events.Event { return completed("0", "processed", rcpt, events.SourceQuery, m, co) },
		func() events.Event { return completed("0", "processed", rcpt2, events.SourceCallback, m2, co2) },
		func() events.Event { return completed("1032", "cancelled", "", events.SourceCallback, m, co) },
		func() events.Event { return completed("1037", "timeout", "", events.SourceQuery, m, "") },
		func() events.Event {
			return completed("400.002.02", "refused", "", events.SourceDispatcher, "", "")
		},
		func() events.Event { return completed(events.CodeNoAnswer, "no answer", "", "reconciler", "", "") },
		func() events.Event {
			return events.LateResult{Payment: variant(), FollowsCode: events.CodeNoAnswer, ResultCode: "0",
				ResultDesc: "late", Receipt: rcpt, Source: events.SourceCallback,
				MerchantRequestID: m, CheckoutRequestID: co, LearntAt: requestedAt.Add(time.Hour)}
		},
		func() events.Event {
			return events.LateResult{Payment: variant(), FollowsCode: "0", ResultCode: "1032",
				ResultDesc: "late failure", Source: events.SourceCallback,
				MerchantRequestID: m, CheckoutRequestID: co, LearntAt: requestedAt.Add(time.Hour)}
		},
	}
	n := 1 + rng.IntN(7)
	var evs []events.Event
	for len(evs) < n {
		if len(evs) > 0 && rng.IntN(5) == 0 { // a redelivery
			evs = append(evs, evs[rng.IntN(len(evs))])
			continue
		}
		evs = append(evs, kinds[rng.IntN(len(kinds))]())
	}
	return evs
}

// applyAsMain applies a batch as main's rounds did, one statement per
// round: the batch's events before completion together (folded), then each
// completion alone, in arrival order. Payments share nothing, so rounds in
// separate transactions end as in one.
func applyAsMain(t testing.TB, w foldWorld, batch []events.Event) {
	t.Helper()
	var before []events.Event
	var completions []events.Event
	for _, ev := range batch {
		if _, ok := ev.(events.Completed); ok {
			completions = append(completions, ev)
		} else {
			before = append(before, ev)
		}
	}
	w.apply(t, before)
	for _, c := range completions {
		w.apply(t, []events.Event{c})
	}
}

// TestApplyFoldMatchesRounds applies random event sequences of many
// payments, interleaved and cut into random batches, once through Apply
// (which may fold a completion into its payment's earlier events, and
// sends a batch that is one upsert as a lone statement), once through
// Apply with every batch in a transaction of its own (BEGIN, statements,
// COMMIT), and once as main's rounds applied them (no completion ever
// folded), and requires identical rows, every column but id and
// updated_at. Each sequence then goes through Apply again, in other
// batches, and must change nothing, updated_at included.
func TestApplyFoldMatchesRounds(t *testing.T) {
	t.Parallel()
	sd := *seed
	if sd == 0 {
		sd = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -seed=%d)", sd, sd)
	rng := rand.New(rand.NewPCG(sd, sd^0x5eed))
	got, want, inTx := newFoldWorld(t), newFoldWorld(t), newFoldWorld(t)
	inTx.s.InTransaction()

	for trial := 0; trial < 20; trial++ {
		var stream []events.Event
		for p := 0; p < 25; p++ {
			evs := foldEvents(rng)
			// Some of the payment's events came in earlier batches.
			k := rng.IntN(len(evs) + 1)
			if rng.IntN(2) == 0 {
				k = 0
			}
			for _, ev := range evs[:k] {
				got.apply(t, []events.Event{ev})
				want.apply(t, []events.Event{ev})
				inTx.apply(t, []events.Event{ev})
			}
			stream = append(stream, evs[k:]...)
		}
		stream = interleave(rng, stream)
		all := stream
		for len(stream) > 0 {
			n := min(1+rng.IntN(40), len(stream))
			got.apply(t, stream[:n])
			applyAsMain(t, want, stream[:n])
			inTx.apply(t, stream[:n])
			stream = stream[n:]
		}
		g, w, x := got.rows(t, false), want.rows(t, false), inTx.rows(t, false)
		if len(g) != len(w) || len(x) != len(w) {
			t.Fatalf("trial %d: %d rows, %d in transactions, want %d", trial, len(g), len(x), len(w))
		}
		for id, wr := range w {
			if g[id] != wr {
				t.Fatalf("trial %d: payment %s:\n got  %s\n want %s", trial, id, g[id], wr)
			}
			if x[id] != wr {
				t.Fatalf("trial %d: payment %s, every batch in a transaction:\n got  %s\n want %s", trial, id, x[id], wr)
			}
		}
		// Redelivery, in batches of another shape, changes nothing.
		before := got.rows(t, true)
		for len(all) > 0 {
			n := min(1+rng.IntN(40), len(all))
			got.apply(t, all[:n])
			all = all[n:]
		}
		after := got.rows(t, true)
		for id, b := range before {
			if after[id] != b {
				t.Fatalf("trial %d: redelivery changed payment %s:\n before %s\n after  %s", trial, id, b, after[id])
			}
		}
	}
}
