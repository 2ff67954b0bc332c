package events

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stkgate/stkgate/events/testkit/jsonedit"
)

// exactTime compares times as encoding/json's reading of them is to be
// matched: the same instant in the same zone (cmp's default, Equal, would
// let a scan that lost the offset through), named the same, UTC as UTC
// (MarshalBinary tells it from a Local that is UTC, String does not).
var exactTime = cmp.Comparer(func(a, b time.Time) bool {
	ab, aErr := a.MarshalBinary()
	bb, bErr := b.MarshalBinary()
	return a.String() == b.String() && aErr == nil && bErr == nil && bytes.Equal(ab, bb)
})

// scanCorpus is every golden event, and a stk.completed whose times are
// in another zone and to the nanosecond.
func scanCorpus() []Event {
	var evs []Event
	for _, g := range goldenEvents {
		evs = append(evs, g.ev)
	}
	eat := time.FixedZone("EAT", 3*60*60)
	p := payment
	p.RequestedAt = time.Date(2026, 12, 7, 7, 30, 0, 123456789, eat)
	return append(evs, Completed{Payment: p, ResultCode: "1032", ResultDesc: "Request cancelled by user",
		Source: SourceQuery, CheckoutRequestID: "ws_CO_1", CompletedAt: p.RequestedAt.Add(time.Minute)})
}

// scanBodies is every event of scanCorpus as Encode writes it, and bodies
// made from them byte by byte (jsonedit.Bodies).
func scanBodies(t testing.TB, n int) [][]byte {
	now := time.Date(2026, 12, 7, 6, 0, 0, 987654321, time.UTC)
	var bases [][]byte
	for _, ev := range scanCorpus() {
		_, _, body, err := Encode("stkgate/test", ev, now)
		if err != nil {
			t.Fatal(err)
		}
		bases = append(bases, body)
	}
	var bodies [][]byte
	for _, b := range jsonedit.Bodies(bases, n) {
		bodies = append(bodies, b.Data)
	}
	return bodies
}

// sameAsDecode fails t unless DecodeAs[E] answers body as Decode and a
// type assertion do: the envelope Decode read, with its event if an E, and
// Decode's error, or ErrMalformed naming the type if not an E. It reports
// whether DecodeAs took it.
func sameAsDecode[E Event](t *testing.T, body []byte, d decoded) bool {
	t.Helper()
	var zero E
	raw, ev, decodeErr := d.raw, d.ev, d.err
	want, wantErr := withData(raw, zero), ""
	if e, ok := ev.(E); ok {
		want.Data = e
	} else if decodeErr != nil {
		wantErr = decodeErr.Error()
	} else {
		wantErr = fmt.Sprintf("%v: type %q, want %q", ErrMalformed, raw.Type, zero.Type())
	}
	got, err := DecodeAs[E](body)
	if (err == nil) != (wantErr == "") || err != nil && err.Error() != wantErr {
		t.Fatalf("%q: DecodeAs[%T] error %v, want %q", body, zero, err, wantErr)
	}
	if err != nil && !errors.Is(err, ErrMalformed) {
		t.Fatalf("%q: DecodeAs[%T] error %v is not ErrMalformed", body, zero, err)
	}
	// reflect.DeepEqual first: equal so, the times are too (their wall
	// clock, monotonic reading and zone alike), and cmp's reflection over
	// 80,000 pairs took the package's tests from 31 to 72 s under -race.
	if !reflect.DeepEqual(want, got) {
		if diff := cmp.Diff(want, got, exactTime); diff != "" {
			t.Fatalf("%q: DecodeAs[%T] differs from Decode (-Decode +DecodeAs):\n%s", body, zero, diff)
		}
	}
	return err == nil
}

// decoded is what Decode answered for a body: sameAsDecode compares each
// type's DecodeAs with it.
type decoded struct {
	raw Envelope
	ev  Event
	err error
}

// TestDecodeAsMatchesDecode: DecodeAs of each type answers every body of
// the edited corpus as Decode and a type assertion do, envelope and error
// included.
func TestDecodeAsMatchesDecode(t *testing.T) {
	t.Parallel()
	bodies := scanBodies(t, 20000)
	taken, scanned := 0, 0
	for _, body := range bodies {
		if _, ok := DecodeScan(body); ok {
			scanned++ // DecodeAs of its type took it without encoding/json
		}
		var d decoded
		d.raw, d.ev, d.err = Decode(body)
		for _, ok := range []bool{
			sameAsDecode[Requested](t, body, d), sameAsDecode[Dispatched](t, body, d),
			sameAsDecode[Completed](t, body, d), sameAsDecode[LateResult](t, body, d),
		} {
			if ok {
				taken++
			}
		}
	}
	// The edits left some bodies decodable, and broke others.
	if taken < len(bodies)/20 || taken > len(bodies)*9/10 || scanned < len(bodies)/20 {
		t.Errorf("DecodeAs took %d of %d bodies, %d by the scan", taken, len(bodies), scanned)
	}
	t.Logf("DecodeAs took %d of %d bodies, %d by the scan", taken, len(bodies), scanned)
}

// BenchmarkDecodeAs reads a stk.requested (the dispatcher's) and a
// stk.completed as Encode writes them.
func BenchmarkDecodeAs(b *testing.B) {
	encoded := func(ev Event) []byte {
		_, _, body, err := Encode("stkgate/test", ev, requestedAt)
		if err != nil {
			b.Fatal(err)
		}
		return body
	}
	requested := encoded(goldenEvents[0].ev)
	completed := encoded(goldenEvents[3].ev)
	b.Run("Requested", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeAs[Requested](requested); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Completed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeAs[Completed](completed); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// sameAsDecodeScan fails t unless DecodeScan, where it takes body, reads
// it as Decode does: the same envelope and event. It reports whether it
// took it.
func sameAsDecodeScan(t *testing.T, body []byte) bool {
	t.Helper()
	got, ok := DecodeScan(body)
	if !ok {
		return false
	}
	raw, ev, err := Decode(body)
	if err != nil {
		t.Fatalf("%q: DecodeScan took it, Decode refused it: %v", body, err)
	}
	if diff := cmp.Diff(withData(raw, ev), got, exactTime); diff != "" {
		t.Fatalf("%q: DecodeScan differs from Decode (-Decode +DecodeScan):\n%s", body, diff)
	}
	return true
}

// TestDecodeScanMatchesDecode: on every body of the edited corpus it
// takes, DecodeScan gives Decode's envelope and event.
func TestDecodeScanMatchesDecode(t *testing.T) {
	bodies := scanBodies(t, 20000)
	scanned := 0
	for _, body := range bodies {
		if sameAsDecodeScan(t, body) {
			scanned++
		}
	}
	// The edits left some bodies to the scan, and made others its
	// fallback's.
	if scanned < len(bodies)/20 || scanned > len(bodies)*9/10 {
		t.Errorf("DecodeScan took %d of %d bodies", scanned, len(bodies))
	}
	t.Logf("DecodeScan took %d of %d bodies", scanned, len(bodies))
}

// TestDecodeScanTakesWhatTheServicesWrite: every golden event, as Encode
// writes it and as the golden file holds it (indented), is the scan's;
// a field added to an event and not to dataFields would make it refuse
// them all, and every read fall back to encoding/json unnoticed.
func TestDecodeScanTakesWhatTheServicesWrite(t *testing.T) {
	for _, g := range goldenEvents {
		_, _, body, err := Encode(g.source, g.ev, requestedAt)
		if err != nil {
			t.Fatal(err)
		}
		file, err := os.ReadFile(filepath.Join("testdata", g.name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range [][]byte{body, file} {
			if !sameAsDecodeScan(t, b) {
				t.Errorf("%s: DecodeScan refused %s", g.name, b)
			}
		}
	}
}

// TestDecodeScanLeavesToDecode: bodies Decode reads (or refuses) that the
// scan cannot vouch for without doing its work, each left to the caller's
// fallback.
func TestDecodeScanLeavesToDecode(t *testing.T) {
	const id = "550e8400-e29b-41d4-a716-446655440000"
	head := `{"specversion":"1.0","id":"x","source":"s","subject":"` + id + `",`
	data := `"data":{"tracking_id":"` + id + `","client":"acme","amount":1500}`
	for _, tt := range []struct{ name, body string }{
		{"data before type", head + data + `,"type":"stk.requested"}`},
		{"data twice", head + `"type":"stk.requested",` + data + `,` + data + `}`},
		{"data in another case", head + `"type":"stk.requested",` + strings.Replace(data, "data", "Data", 1) + `}`},
		{"key in another case", head + `"Type":"stk.requested",` + data + `}`},
		{"key escaped", head + `"type":"stk.requested",` + strings.Replace(data, "client", `\u0063lient`, 1) + `}`},
		{"value escaped", head + `"type":"stk.requested",` + strings.Replace(data, "acme", `a\u0026b`, 1) + `}`},
		{"type twice", head + `"type":"stk.completed","type":"stk.requested",` + data + `}`},
		{"unknown key", head + `"type":"stk.requested","x":1,` + data + `}`},
		{"another type's field", head + `"type":"stk.requested",` + strings.Replace(data, "client", "receipt", 1) + `}`},
		{"null", head + `"type":"stk.requested","datacontenttype":null,` + data + `}`},
		{"amount with an exponent", head + `"type":"stk.requested",` + strings.Replace(data, "1500", "15e2", 1) + `}`},
		{"amount of 19 digits", head + `"type":"stk.requested",` + strings.Replace(data, "1500", "1000000000000000000", 1) + `}`},
		{"invalid UTF-8", head + `"type":"stk.requested",` + strings.Replace(data, "acme", "ac\xffme", 1) + `}`},
		{"unknown type", head + `"type":"stk.x",` + data + `}`},
		{"subject not the tracking id", strings.Replace(head, id, "y", 1) + `"type":"stk.requested",` + data + `}`},
		{"no specversion", strings.Replace(head, `"specversion":"1.0",`, "", 1) + `"type":"stk.requested",` + data + `}`},
		{"no data", head + `"type":"stk.requested"}`},
		{"data null", head + `"type":"stk.requested","data":null}`},
		{"after the envelope", head + `"type":"stk.requested",` + data + `}x`},
		{"no tracking id, subject empty", `{"specversion":"1.0","subject":"","type":"stk.requested","data":{"tracking_id":""}}`},
		{"no data fields, subject empty", `{"specversion":"1.0","subject":"","type":"stk.requested","data":{}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if env, ok := DecodeScan([]byte(tt.body)); ok {
				t.Errorf("DecodeScan took %s: %+v", tt.body, env)
			}
		})
	}
	// The same message, plain, is the scan's.
	if body := head + `"type":"stk.requested",` + data + `}`; !sameAsDecodeScan(t, []byte(body)) {
		t.Errorf("DecodeScan refused %s", body)
	}
}

// The envelope's and the event's strings are the scan's own: a caller's
// body (a NATS message's, whose buffer may be used again) written over
// after decoding leaves them as they were.
func TestDecodeScanKeepsNoPartOfTheBody(t *testing.T) {
	for _, ev := range scanCorpus() {
		_, _, body, err := Encode("stkgate/test", ev, time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		env, ok := DecodeScan(body)
		if !ok {
			t.Fatalf("%s: not scanned", ev.Type())
		}
		want := env
		want.Data = cloneEvent(t, env.Data)
		want.ID, want.Source, want.Subject = strings.Clone(env.ID), strings.Clone(env.Source), strings.Clone(env.Subject)
		got, err := DecodeAs[Completed](body)
		completed := err == nil
		wantCompleted := got
		if completed {
			wantCompleted.Data = cloneEvent(t, got.Data).(Completed)
		}
		for i := range body {
			body[i] = 'Z'
		}
		if diff := cmp.Diff(want, env, exactTime); diff != "" {
			t.Errorf("%s: DecodeScan's result changed with its body (-before +after):\n%s", ev.Type(), diff)
		}
		if completed {
			if diff := cmp.Diff(wantCompleted, got, exactTime); diff != "" {
				t.Errorf("DecodeAs's result changed with its body (-before +after):\n%s", diff)
			}
		}
	}
}

// cloneEvent is ev with every string copied, through its JSON.
func cloneEvent(t *testing.T, ev Event) Event {
	t.Helper()
	_, _, body, err := Encode("stkgate/test", ev, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, c, err := Decode(body)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// DecodeAs of a type that is not one of the four events itself (a
// pointer to one, a type embedding one) reads as it did before the scan:
// the scan sets only the four.
func TestDecodeAsOtherTypesOfEvent(t *testing.T) {
	ev := scanCorpus()[0].(Requested)
	_, _, body, err := Encode("stkgate/test", ev, time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	want, err := DecodeAs[Requested](body)
	if err != nil {
		t.Fatal(err)
	}
	ptr, err := DecodeAs[*Requested](body)
	if err != nil || ptr.Data == nil || !cmp.Equal(*ptr.Data, want.Data, exactTime) || ptr.ID != want.ID {
		t.Errorf("DecodeAs[*Requested]: %+v, %v; want %+v", ptr, err, want)
	}
	type embedding struct{ Requested }
	emb, err := DecodeAs[embedding](body)
	if err != nil || !cmp.Equal(emb.Data.Requested, want.Data, exactTime) {
		t.Errorf("DecodeAs[embedding]: %+v, %v; want %+v", emb, err, want)
	}
}
