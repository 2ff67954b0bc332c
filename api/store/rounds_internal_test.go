package store

import (
	"database/sql/driver"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/stkgate/stkgate/events"
)

// roundsAsBefore is rounds as it was, with a map keyed by the whole input
// to drop exact repeats: the reference the differential test holds rounds
// to.
func roundsAsBefore(rows []input, absorb bool) []batch {
	rows = byStage(rows)
	seen := make(map[input]bool, len(rows))
	depth := make(map[string]int, len(rows))
	firstAt := make(map[string]int, len(rows))
	var out []batch
	for _, r := range rows {
		if seen[r] {
			continue
		}
		seen[r] = true
		k := depth[r.trackingID]
		if k > 0 && r.stage < StageCompleted {
			out[0][firstAt[r.trackingID]].fold(r)
			continue
		}
		if absorb && k == 1 && out[0][firstAt[r.trackingID]].absorb(r) {
			continue
		}
		if k == 0 {
			if len(out) == 0 {
				out = append(out, nil)
			}
			firstAt[r.trackingID] = len(out[0])
		}
		depth[r.trackingID] = k + 1
		if k == len(out) {
			out = append(out, nil)
		}
		out[k] = append(out[k], r)
	}
	for _, b := range out {
		slices.SortFunc(b, func(x, y input) int { return strings.Compare(x.trackingID, y.trackingID) })
	}
	return out
}

// randomInputs is a batch's candidate rows: a few payments' inputs of every
// stage, fields drawn from small sets so that inputs repeat exactly, differ
// in one field, fold and absorb or not.
func randomInputs(rng *rand.Rand) []input {
	ids := make([]string, 1+rng.IntN(6))
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	pick := func(vals ...string) string { return vals[rng.IntN(len(vals))] }
	n := 1 + rng.IntN(30)
	var rows []input
	for len(rows) < n {
		if len(rows) > 0 && rng.IntN(4) == 0 {
			rows = append(rows, rows[rng.IntN(len(rows))]) // a redelivery
			continue
		}
		in := input{
			trackingID:  ids[rng.IntN(len(ids))],
			client:      pick("", "acme"),
			phone:       pick("", "254712345678", "254799999999"),
			amount:      int64(rng.IntN(3)) * 500,
			reference:   pick("", "INV-1"),
			tag:         pick("", "t"),
			requestedAt: pick("", "2026-12-07T06:00:00Z", "2026-12-07T06:00:01Z"),
			stage:       int64(rng.IntN(3)),
		}
		if in.stage >= StageDispatched || rng.IntN(3) == 0 {
			in.merchantRequestID, in.checkoutRequestID = pick("", "m", "m2"), pick("", "co", "co2")
		}
		if in.stage == StageCompleted {
			in.responseCode = pick("0", "1032", events.CodeNoAnswer)
			status, _ := events.Outcome(in.responseCode)
			in.status = int64(status)
			in.responseDescription = pick("done", "cancelled")
			in.transactionCode, in.transactionDate = pick("", "RCPT1", "RCPT2"), pick("", "2026-12-07 09:00:00")
			in.source = pick(events.SourceCallback, events.SourceQuery)
		}
		rows = append(rows, in)
	}
	return rows
}

// rounds gives exactly the batches it gave with a map keyed by the whole
// input, with and without absorbing completions, for random batches with
// repeats, stages out of order and inputs that differ in one field.
func TestRoundsMatchesRoundsAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 29))
	for trial := range 20000 {
		rows := randomInputs(rng)
		for _, absorb := range []bool{true, false} {
			want := roundsAsBefore(slices.Clone(rows), absorb)
			got := rounds(slices.Clone(rows), absorb)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("trial %d, absorb %v, rows %+v:\n got  %+v\n want %+v", trial, absorb, rows, got, want)
			}
		}
	}
}

// toInput writes a tracking id and a request time as it did, however they
// are written and whether or not the request time repeats the one before.
func TestToInputMatchesParseAndFormat(t *testing.T) {
	u := uuid.MustParse("6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b01")
	nairobi := time.FixedZone("EAT", 3*3600)
	at := time.Date(2026, 12, 7, 9, 30, 0, 123456789, nairobi)
	times := []time.Time{at, at.UTC(), at.Add(time.Microsecond), at, at.Add(time.Nanosecond), {}, at.In(time.UTC).Add(time.Hour)}
	idText := []string{u.String(), strings.ToUpper(u.String()), "{" + u.String() + "}", "urn:uuid:" + u.String(),
		strings.ReplaceAll(u.String(), "-", ""), "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b0g", "6f1c2a34x0b6e-4d8e-9a51-3c2f1e0d9b01", "x"}
	var memo requestTimes
	for _, id := range idText {
		for _, rt := range times {
			ev := events.Requested{Payment: events.Payment{TrackingID: id, RequestedAt: rt}}
			got, err := toInput(ev, &memo)
			parsed, perr := uuid.Parse(id)
			if (err != nil) != (perr != nil) {
				t.Fatalf("%q: toInput error %v, uuid.Parse's %v", id, err, perr)
			}
			if err != nil {
				continue
			}
			if got.trackingID != parsed.String() {
				t.Errorf("%q: tracking id %q, want %q", id, got.trackingID, parsed.String())
			}
			want := ""
			if !rt.IsZero() {
				want = rt.UTC().Format(timestampLayout)
			}
			if got.requestedAt != want {
				t.Errorf("%v: request time %q, want %q", rt, got.requestedAt, want)
			}
			if Canonical(id) != parsed.String() {
				t.Errorf("Canonical(%q) = %q, want %q", id, Canonical(id), parsed.String())
			}
		}
	}
}

// BenchmarkRounds splits a batch as the projector's usual one (the three
// events of 85 payments, in stream order) into rounds, and as before.
func BenchmarkRounds(b *testing.B) {
	rows := usualBatch()
	b.Run("rounds", func(b *testing.B) {
		for b.Loop() {
			rounds(rows, true)
		}
	})
	b.Run("as before", func(b *testing.B) {
		for b.Loop() {
			roundsAsBefore(rows, true)
		}
	})
}

// BenchmarkArgs writes the upsert's parameters of the projector's usual
// batch, and through pq.Array as before (with the Value the driver calls).
func BenchmarkArgs(b *testing.B) {
	batch := rounds(usualBatch(), true)[0]
	b.Run("args", func(b *testing.B) {
		for b.Loop() {
			batch.args()
		}
	})
	b.Run("as before", func(b *testing.B) {
		for b.Loop() {
			for _, a := range argsAsBefore(batch) {
				_, _ = a.(driver.Valuer).Value()
			}
		}
	})
}

// usualBatch is the inputs of the projector's usual batch: the three
// events of 85 payments, in stream order.
func usualBatch() []input {
	var rows []input
	for range 85 {
		id := uuid.NewString()
		p := input{trackingID: id, client: "acme", phone: "254712345678", amount: 1500, reference: "INV-1",
			requestedAt: "2026-12-07T06:00:00Z"}
		d := p
		d.stage, d.merchantRequestID, d.checkoutRequestID = StageDispatched, "m-"+id, "co-"+id
		c := d
		c.stage, c.status, c.responseCode, c.responseDescription, c.transactionCode, c.source =
			StageCompleted, 1, "0", "done", "R"+id[:9], events.SourceCallback
		rows = append(rows, p, d, c)
	}
	return rows
}

// argsAsBefore is batch.args as it was, through pq.Array: the reference
// TestArgsMatchesPQArray holds args to.
func argsAsBefore(b batch) []any {
	var (
		ids, clients, phones, refs, tags, requested                  []string
		codes, descs, receipts, merchants, checkouts, dates, sources []string
		amounts, stages, statuses                                    []int64
		folded                                                       = []string{}
	)
	for _, r := range b {
		ids = append(ids, r.trackingID)
		clients = append(clients, r.client)
		phones = append(phones, r.phone)
		amounts = append(amounts, r.amount)
		refs = append(refs, r.reference)
		tags = append(tags, r.tag)
		statuses = append(statuses, r.status)
		codes = append(codes, r.responseCode)
		descs = append(descs, r.responseDescription)
		receipts = append(receipts, r.transactionCode)
		merchants = append(merchants, r.merchantRequestID)
		checkouts = append(checkouts, r.checkoutRequestID)
		dates = append(dates, r.transactionDate)
		stages = append(stages, r.stage)
		sources = append(sources, r.source)
		requested = append(requested, r.requestedAt)
		if r.folded {
			folded = append(folded, r.trackingID)
		}
	}
	return []any{
		pq.Array(ids), pq.Array(clients), pq.Array(phones), pq.Array(amounts), pq.Array(refs), pq.Array(tags),
		pq.Array(statuses), pq.Array(codes), pq.Array(descs), pq.Array(receipts),
		pq.Array(merchants), pq.Array(checkouts), pq.Array(dates), pq.Array(stages), pq.Array(sources),
		pq.Array(requested), pq.Array(folded),
	}
}

// args writes every column as the very text pq.Array wrote, for random
// batches whose strings hold quotes, backslashes, commas, braces, spaces,
// NULL, multi-byte characters or nothing, and numbers of every sign.
func TestArgsMatchesPQArray(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 7))
	pieces := []string{"", "a", `"`, `\`, `\"`, ",", "{", "}", " ", "NULL", "null", "é", "M-Pesa", "'", "\t", "x\"y\\z"}
	text := func() string {
		var sb strings.Builder
		for range rng.IntN(4) {
			sb.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return sb.String()
	}
	num := func() int64 {
		switch rng.IntN(3) {
		case 0:
			return 0
		case 1:
			return -rng.Int64()
		}
		return rng.Int64()
	}
	for trial := range 5000 {
		b := make(batch, 1+rng.IntN(20))
		for i := range b {
			b[i] = input{
				trackingID: uuid.NewString(), client: text(), phone: text(), amount: num(), reference: text(), tag: text(),
				requestedAt: text(), stage: num(), status: num(), responseCode: text(), responseDescription: text(),
				transactionCode: text(), merchantRequestID: text(), checkoutRequestID: text(), transactionDate: text(),
				source: text(), folded: rng.IntN(2) == 0,
			}
		}
		got, want := b.args(), argsAsBefore(b)
		if len(got) != len(want) {
			t.Fatalf("trial %d: %d args, want %d", trial, len(got), len(want))
		}
		for i := range want {
			w, err := want[i].(driver.Valuer).Value()
			if err != nil {
				t.Fatal(err)
			}
			if got[i] != w {
				t.Fatalf("trial %d, argument $%d:\n got  %q\n want %q", trial, i+1, got[i], w)
			}
		}
	}
}
