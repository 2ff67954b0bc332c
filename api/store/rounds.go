package store

// Folding a batch's inputs into rounds of one row per payment, and the
// upsert that writes a round.

import (
	"slices"
	"strconv"
	"strings"
)

// batch is a set of inputs with at most one per tracking id: one INSERT …
// ON CONFLICT DO UPDATE can touch a row only once.
type batch []input

// rounds splits rows into batches to apply one after the other: for each
// tracking id its events in state order (arrival order within a stage), the
// first in the first batch, the second in the second, and so on. A
// tracking id's events before any completion (requested, dispatched, late
// results' payments) are first folded into one input (fold): the upsert
// merges them field by field, filling what is empty, the stage the
// highest, Daraja's ids the first seen, so one upsert of the fold leaves
// the row as the upserts of each in turn would, at the cost of one row
// version instead of several. The first completion (in arrival order) is
// folded in too when that changes nothing (absorb): when it brings no
// payment field the fold lacks and names the same Daraja ids. The folded
// input then fills in the row like the fold, whether or not the completion
// decides (upsert's $17), and decides as the completion would. Other
// completions are never folded: the first one applied decides. The merge
// does not depend on the order; state order only spares the updates a late
// requested would cost. Exact repeats are dropped. Every batch is sorted by
// tracking id so that concurrent transactions lock rows in the same order
// and cannot deadlock; a later batch only touches rows an earlier one
// already locked.
//
// absorb false folds no completion (the rounds as before the fold): Apply's
// retry after a conflict uses it, since a folded completion takes its
// CheckoutRequestID in the first statement, before another payment's
// completion in the same statement may have given it up.
func rounds(rows []input, absorb bool) []batch {
	rows = byStage(rows)
	// One map, by tracking id, where a map keyed by the whole input found
	// the exact repeats: hashing every field of every input was up to a
	// tenth of the projector's CPU. An input can only repeat one of its own tracking
	// id, found down the chain of those kept before it (prev).
	type idState struct {
		depth   int // its inputs in batches so far
		firstAt int // where in out[0] its first input is
		last    int // the last of its inputs kept, in rows
	}
	ids := make(map[string]*idState, len(rows))
	states := make([]idState, 0, len(rows))
	prev := make([]int, len(rows))
	var out []batch
	for i, r := range rows {
		st := ids[r.trackingID]
		if st == nil {
			states = append(states, idState{last: -1})
			st = &states[len(states)-1]
			ids[r.trackingID] = st
		}
		repeat := false
		for j := st.last; j >= 0; j = prev[j] {
			if rows[j] == r {
				repeat = true
				break
			}
		}
		if repeat {
			continue
		}
		prev[i], st.last = st.last, i
		k := st.depth
		if k > 0 && r.stage < StageCompleted {
			// Its earlier events, all before completion too (state
			// order), are folded into its input in the first batch.
			out[0][st.firstAt].fold(r)
			continue
		}
		// Only its first completion (k == 1 after its fold) may be
		// folded: the one that comes first decides.
		if absorb && k == 1 && out[0][st.firstAt].absorb(r) {
			continue
		}
		if k == 0 {
			if len(out) == 0 {
				// Room for every payment: most batches are this one.
				out = append(out, make(batch, 0, len(rows)))
			}
			st.firstAt = len(out[0])
		}
		st.depth = k + 1
		if k == len(out) {
			out = append(out, nil)
		}
		out[k] = append(out[k], r)
	}
	for _, b := range out {
		// A batch holds a tracking id once: no two compare equal.
		slices.SortFunc(b, func(x, y input) int { return strings.Compare(x.trackingID, y.trackingID) })
	}
	return out
}

// byStage returns rows in state order, arrival order within a stage: a
// stable sort on the three stages in one pass, where a stable comparison
// sort moves these large structs O(n log² n) times.
func byStage(rows []input) []input {
	var count [StageCompleted + 2]int // toInput gives stages 0 to 2 only
	for _, r := range rows {
		count[min(max(r.stage, 0), StageCompleted)+1]++
	}
	for i := 1; i < len(count); i++ {
		count[i] += count[i-1]
	}
	out := make([]input, len(rows))
	for _, r := range rows {
		k := min(max(r.stage, 0), StageCompleted)
		out[count[k]] = r
		count[k]++
	}
	return out
}

// fold merges r, an event of the same tracking id before completion that
// comes after in, into in as upsert merges a row with it: a payment field
// and each of Daraja's ids kept if set, else taken from r; the stage the
// higher. The request time stays in's: only the insert reads it.
func (in *input) fold(r input) {
	first := func(a *string, b string) {
		if *a == "" {
			*a = b
		}
	}
	first(&in.client, r.client)
	first(&in.phone, r.phone)
	first(&in.reference, r.reference)
	first(&in.tag, r.tag)
	first(&in.merchantRequestID, r.merchantRequestID)
	first(&in.checkoutRequestID, r.checkoutRequestID)
	if in.amount == 0 {
		in.amount = r.amount
	}
	in.stage = max(in.stage, r.stage)
}

// absorb folds c, a completion of the same tracking id that comes after
// in, into in when in is a fold of events before completion and the result
// is the same as applying in and then c: c brings no payment field in
// lacks (the fold's fills stand whatever c's fate, c's would only if c
// decides) and names the same Daraja ids as in (which the row keeps,
// COALESCE(t, in), when c does not decide, and takes, COALESCE(c, t),
// when it does). in then carries c's outcome, and folded marks it for the
// upsert. It reports whether c was folded.
func (in *input) absorb(c input) bool {
	if in.stage >= StageCompleted || c.stage != StageCompleted ||
		in.merchantRequestID != c.merchantRequestID || in.checkoutRequestID != c.checkoutRequestID {
		return false
	}
	lacks := func(a, b string) bool { return a == "" && b != "" }
	if lacks(in.client, c.client) || lacks(in.phone, c.phone) || lacks(in.reference, c.reference) ||
		lacks(in.tag, c.tag) || (in.amount == 0 && c.amount != 0) {
		return false
	}
	in.stage, in.status = c.stage, c.status
	in.responseCode, in.responseDescription = c.responseCode, c.responseDescription
	in.transactionCode, in.transactionDate, in.source = c.transactionCode, c.transactionDate, c.source
	in.folded = true
	return true
}

// args are upsert's parameters: each column of the batch as one array
// literal, written as pq.Array writes it ({"a","b"}, every element quoted,
// " and \ escaped; {1,2}), all in one buffer made once. pq.Array copied
// every string into a []byte of its own and grew a literal per column: a
// tenth of the projector's CPU, and as much garbage as the rest of Apply.
func (b batch) args() []any {
	w := arrays{buf: make([]byte, 0, b.literalSize())}
	w.texts(b, func(r *input) string { return r.trackingID })
	w.texts(b, func(r *input) string { return r.client })
	w.texts(b, func(r *input) string { return r.phone })
	w.ints(b, func(r *input) int64 { return r.amount })
	w.texts(b, func(r *input) string { return r.reference })
	w.texts(b, func(r *input) string { return r.tag })
	w.ints(b, func(r *input) int64 { return r.status })
	w.texts(b, func(r *input) string { return r.responseCode })
	w.texts(b, func(r *input) string { return r.responseDescription })
	w.texts(b, func(r *input) string { return r.transactionCode })
	w.texts(b, func(r *input) string { return r.merchantRequestID })
	w.texts(b, func(r *input) string { return r.checkoutRequestID })
	w.texts(b, func(r *input) string { return r.transactionDate })
	w.ints(b, func(r *input) int64 { return r.stage })
	w.texts(b, func(r *input) string { return r.source })
	w.texts(b, func(r *input) string { return r.requestedAt })
	// The folded completions' tracking ids only.
	w.buf = append(w.buf, '{')
	n := 0
	for i := range b {
		if b[i].folded {
			if n > 0 {
				w.buf = append(w.buf, ',')
			}
			w.buf = appendQuoted(w.buf, b[i].trackingID)
			n++
		}
	}
	w.end('}')
	all := string(w.buf)
	args := make([]any, len(w.ends))
	from := 0
	for i, to := range w.ends {
		args[i] = all[from:to]
		from = to
	}
	return args
}

// literalSize is about the bytes of b's array literals: its strings, with
// three bytes each for quotes and a comma, and 20 for each number.
func (b batch) literalSize() int {
	n := 64
	for i := range b {
		r := &b[i]
		n += 17*3 + 3*20 + 36 + len(r.trackingID) + len(r.client) + len(r.phone) + len(r.reference) + len(r.tag) +
			len(r.responseCode) + len(r.responseDescription) + len(r.transactionCode) + len(r.merchantRequestID) +
			len(r.checkoutRequestID) + len(r.transactionDate) + len(r.source) + len(r.requestedAt)
	}
	return n
}

// arrays writes array literals one after the other into buf; ends holds
// where each ends.
type arrays struct {
	buf  []byte
	ends []int
}

func (w *arrays) texts(b batch, field func(*input) string) {
	w.buf = append(w.buf, '{')
	for i := range b {
		if i > 0 {
			w.buf = append(w.buf, ',')
		}
		w.buf = appendQuoted(w.buf, field(&b[i]))
	}
	w.end('}')
}

func (w *arrays) ints(b batch, field func(*input) int64) {
	w.buf = append(w.buf, '{')
	for i := range b {
		if i > 0 {
			w.buf = append(w.buf, ',')
		}
		w.buf = strconv.AppendInt(w.buf, field(&b[i]), 10)
	}
	w.end('}')
}

func (w *arrays) end(c byte) {
	w.buf = append(w.buf, c)
	w.ends = append(w.ends, len(w.buf))
}

// appendQuoted appends s as an element of an array literal: in double
// quotes, with " and \ escaped by a backslash (pq's appendArrayQuotedBytes).
func appendQuoted(buf []byte, s string) []byte {
	buf = append(buf, '"')
	from := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			buf = append(buf, s[from:i]...)
			buf = append(buf, '\\', c)
			from = i + 1
		}
	}
	buf = append(buf, s[from:]...)
	return append(buf, '"')
}

// upsert applies a batch. "win" below is the condition under which the
// incoming event is the first completion of the row:
// EXCLUDED.stage = 2 AND t.stage < 2. The WHERE clause holds exactly when
// the SET changes something, so a repeated or outrun event leaves the row,
// updated_at included, untouched; a completion that is not the first
// changes nothing, unless it carries its payment's earlier events (input
// folded, its tracking id in $17): then those fill in what the row lacks,
// as they would have alone.
const upsert = `
INSERT INTO stk_pushes AS t (
	tracking_id, client, phone_number, amount, reference, tag,
	status, response_code, response_description, transaction_code,
	merchant_request_id, checkout_request_id, transaction_date, stage, source,
	created_at, updated_at)
SELECT i.tracking_id, i.client, i.phone_number, i.amount, i.reference, NULLIF(i.tag, ''),
	i.status, NULLIF(i.response_code, ''), NULLIF(i.response_description, ''), NULLIF(i.transaction_code, ''),
	NULLIF(i.merchant_request_id, ''), NULLIF(i.checkout_request_id, ''), NULLIF(i.transaction_date, ''), i.stage, NULLIF(i.source, ''),
	COALESCE(NULLIF(i.requested_at, '')::timestamptz, now()), now()
FROM unnest(
	$1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
	$7::smallint[], $8::text[], $9::text[], $10::text[],
	$11::text[], $12::text[], $13::text[], $14::smallint[], $15::text[],
	$16::text[]
) AS i(tracking_id, client, phone_number, amount, reference, tag,
	status, response_code, response_description, transaction_code,
	merchant_request_id, checkout_request_id, transaction_date, stage, source,
	requested_at)
ORDER BY i.tracking_id
ON CONFLICT (tracking_id) DO UPDATE SET
	client       = CASE WHEN t.client = '' THEN EXCLUDED.client ELSE t.client END,
	phone_number = CASE WHEN t.phone_number = '' THEN EXCLUDED.phone_number ELSE t.phone_number END,
	amount       = CASE WHEN t.amount = 0 THEN EXCLUDED.amount ELSE t.amount END,
	reference    = CASE WHEN t.reference = '' THEN EXCLUDED.reference ELSE t.reference END,
	tag          = COALESCE(t.tag, EXCLUDED.tag),
	stage        = GREATEST(t.stage, EXCLUDED.stage),
	status               = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.status ELSE t.status END,
	response_code        = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.response_code ELSE t.response_code END,
	response_description = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.response_description ELSE t.response_description END,
	transaction_code     = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.transaction_code ELSE t.transaction_code END,
	transaction_date     = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.transaction_date ELSE t.transaction_date END,
	source               = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2 THEN EXCLUDED.source ELSE t.source END,
	-- Daraja's ids: the deciding completion's when it has them, else the
	-- first ones seen.
	merchant_request_id = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2
		THEN COALESCE(EXCLUDED.merchant_request_id, t.merchant_request_id)
		ELSE COALESCE(t.merchant_request_id, EXCLUDED.merchant_request_id) END,
	checkout_request_id = CASE WHEN EXCLUDED.stage = 2 AND t.stage < 2
		THEN COALESCE(EXCLUDED.checkout_request_id, t.checkout_request_id)
		ELSE COALESCE(t.checkout_request_id, EXCLUDED.checkout_request_id) END,
	updated_at = now()
WHERE (NOT (EXCLUDED.stage = 2 AND t.stage = 2) OR EXCLUDED.tracking_id = ANY($17::uuid[])) AND (
	EXCLUDED.stage > t.stage
	OR (t.client = '' AND EXCLUDED.client <> '')
	OR (t.phone_number = '' AND EXCLUDED.phone_number <> '')
	OR (t.amount = 0 AND EXCLUDED.amount <> 0)
	OR (t.reference = '' AND EXCLUDED.reference <> '')
	OR (t.tag IS NULL AND EXCLUDED.tag IS NOT NULL)
	OR (t.merchant_request_id IS NULL AND EXCLUDED.merchant_request_id IS NOT NULL)
	OR (t.checkout_request_id IS NULL AND EXCLUDED.checkout_request_id IS NOT NULL))
`
