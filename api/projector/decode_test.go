package projector

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/jsonedit"
)

// exactDecode is Decode as it was: events.Decode, then the subject.
func exactDecode(subject string, body []byte) (events.Event, error) {
	_, ev, err := events.Decode(body)
	if err != nil {
		return nil, err
	}
	if want := events.Subject(ev.Type(), ev.Base().TrackingID); subject != want {
		return nil, errors.New("subject")
	}
	return ev, nil
}

// sameAsEventsDecode fails t unless Decode answers body on subject as
// events.Decode and the subject check do: the same event, or an error
// (ErrMalformed) where they give one.
func sameAsEventsDecode(t *testing.T, subject string, body []byte) {
	t.Helper()
	want, wantErr := exactDecode(subject, body)
	got, err := Decode(subject, body)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q: Decode error %v, events.Decode's %v", body, err, wantErr)
	}
	if err != nil && !errors.Is(err, events.ErrMalformed) {
		t.Errorf("%q: error %v is not ErrMalformed", body, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("%q: Decode differs from events.Decode (-events.Decode +Decode):\n%s", body, diff)
	}
}

// decodeCorpus is an event of each kind with every field set.
func decodeCorpus() []events.Event {
	at := time.Date(2026, 12, 7, 4, 30, 0, 123456000, time.UTC)
	p := events.Payment{TrackingID: "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b01", Client: "acme", Phone: "254712345678",
		Amount: 1500, Reference: "INV-1", Tag: "tag", RequestedAt: at}
	return []events.Event{
		events.Requested{Payment: p, CallbackURL: "https://example.com/hook"},
		events.Dispatched{Payment: p, MerchantRequestID: "m", CheckoutRequestID: "ws_CO_1",
			ResponseDescription: "accepted", CustomerMessage: "accepted"},
		events.Completed{Payment: p, ResultCode: "0", ResultDesc: "done", Receipt: "RCPT123", TransactionDate: "2026-12-07 07:30:00",
			Source: events.SourceCallback, MerchantRequestID: "m", CheckoutRequestID: "ws_CO_1", CompletedAt: at.Add(time.Minute)},
		events.LateResult{Payment: p, FollowsCode: events.CodeNoAnswer, ResultCode: "0", ResultDesc: "late", Receipt: "RCPT123",
			TransactionDate: "2026-12-07 07:30:00", Source: events.SourceCallback, MerchantRequestID: "m",
			CheckoutRequestID: "ws_CO_1", LearntAt: at.Add(time.Hour)},
	}
}

// Every field of every kind of event is one of anyEvent's, under the same
// JSON name and of the same type: a field added to an event and not there
// would be lost by the one pass.
func TestAnyEventHasEveryField(t *testing.T) {
	fields := func(typ reflect.Type) map[string]reflect.Type {
		out := map[string]reflect.Type{}
		for _, f := range reflect.VisibleFields(typ) {
			if f.Anonymous || !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			out[name] = f.Type
		}
		return out
	}
	all := fields(reflect.TypeFor[anyEvent]())
	for _, ev := range decodeCorpus() {
		for name, typ := range fields(reflect.TypeOf(ev)) {
			if all[name] != typ {
				t.Errorf("%s's field %q (%v) is not anyEvent's (%v)", ev.Type(), name, typ, all[name])
			}
		}
	}
}

// Decode takes and skips exactly what events.Decode did, with the same
// events: every kind of event, and bodies changed at random (fields
// dropped, of the wrong type, of another kind of event, data named twice
// or in another case, keys escaped, …).
func TestDecodeMatchesEventsDecode(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 7))
	var bodies [][]byte
	var subjects []string
	for _, ev := range decodeCorpus() {
		subject, _, body, err := events.Encode("stkgate/test", ev, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ev2, err := Decode(subject, body)
		if err != nil {
			t.Fatalf("%s: %v", ev.Type(), err)
		}
		if diff := cmp.Diff(ev, ev2); diff != "" {
			t.Errorf("%s decoded (-sent +got):\n%s", ev.Type(), diff)
		}
		if ok := func() bool { _, ok := decodeOnePass(body); return ok }(); !ok {
			t.Errorf("%s: an event as the services write it did not take the one pass", ev.Type())
		}
		if env, ok := events.DecodeScan(body); !ok || !isSubject(subject, env.Type, env.Subject) {
			t.Errorf("%s: an event as the services write it was not read by events.DecodeScan", ev.Type())
		}
		bodies, subjects = append(bodies, body), append(subjects, subject)
	}
	fixed := []string{
		`{"specversion":"1.0","type":"stk.requested","subject":"x","data":{"tracking_id":"x"},"data":{"tracking_id":"x","client":"late"}}`,
		`{"specversion":"1.0","type":"stk.requested","subject":"x","data":{"tracking_id":"x","client":"a"},"DATA":{"tracking_id":"x"}}`,
		`{"specversion":"1.0","type":"stk.requested","subject":"x","d\u0061ta":{"tracking_id":"x"},"data":{"tracking_id":"x","client":"a"}}`,
		`{"specversion":"1.0","type":"stk.requested","subject":"x","data":{"tracking_id":"x","result_code":5}}`,
		`{"specversion":"1.0","type":"stk.requested","subject":"x","data":{"tracking_id":"x","completed_at":"never"}}`,
		`{"specversion":"1.0","type":"stk.requested","subject":"x","data":null}`,
		`{"specversion":"1.0","type":"stk.requested","subject":"x","data":[1]}`,
		`{"specversion":"1.0","type":"stk.requested","subject":"x"}`,
		`{"specversion":"1.0","type":"stk.requested","subject":"x","Data":{"Tracking_ID":"x","CLIENT":"a"}}`,
		`{"specversion":"1.0","type":"stk.completed","subject":"x","data":{"tracking_id":"x","reference":"data"}}`,
		`{"specversion":"0.3","type":"stk.requested","subject":"x","data":{"tracking_id":"x"}}`,
		`{"specversion":"1.0","type":"stk.requested","subject":"y","data":{"tracking_id":"x"}}`,
		`{"specversion":"1.0","type":"stk.requested","subject":"x","d\u0061ta":{"tracking_id":"x","client":"a"},"data":{"tracking_id":"x"}}`,
	}
	for _, b := range fixed {
		for _, typ := range []string{events.TypeRequested, events.TypeCompleted} {
			bodies, subjects = append(bodies, []byte(b)), append(subjects, events.Subject(typ, "x"))
		}
	}
	values := []any{nil, "", "x", "data", 0, 12, -1, 1.5, true, []any{}, map[string]any{}, "2026-12-07T04:30:00Z", "not a time"}
	keys := []string{"tracking_id", "client", "amount", "requested_at", "result_code", "receipt", "completed_at", "learnt_at",
		"callback_url", "checkout_request_id", "follows_result_code", "Data", "data", "DATA", "Amount", "unknown"}
	for i := 0; i < 3000; i++ {
		k := rng.IntN(len(decodeCorpus()))
		var env map[string]any
		if err := json.Unmarshal(bodies[k], &env); err != nil {
			t.Fatal(err)
		}
		data, _ := env["data"].(map[string]any)
		for range 1 + rng.IntN(3) {
			target := data
			if rng.IntN(4) == 0 || target == nil {
				target = env
			}
			key := keys[rng.IntN(len(keys))]
			if rng.IntN(3) == 0 {
				delete(target, key)
			} else {
				target[key] = values[rng.IntN(len(values))]
			}
		}
		if rng.IntN(6) == 0 {
			env["type"] = []string{events.TypeRequested, events.TypeDispatched, events.TypeCompleted, events.TypeLateResult, "x"}[rng.IntN(5)]
		}
		body, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		if rng.IntN(8) == 0 { // a second data, raw
			body = append(body[:len(body)-1], []byte(`,"data":{"tracking_id":"6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b01"}}`)...)
		}
		bodies, subjects = append(bodies, body), append(subjects, subjects[k])
	}
	onePass := 0
	for i, body := range bodies {
		if _, ok := decodeOnePass(body); ok {
			onePass++
		}
		sameAsEventsDecode(t, subjects[i], body)
	}
	// The one pass vouched for some, and left others to events.Decode.
	if onePass < len(bodies)/10 || onePass > len(bodies)*9/10 {
		t.Errorf("the one pass took %d of %d bodies", onePass, len(bodies))
	}
	t.Logf("the one pass took %d of %d bodies", onePass, len(bodies))
}

// BenchmarkDecode decodes a stk.completed as the services write it: by
// Decode (events.DecodeScan), in one pass of encoding/json and as events.Decode
// does.
func BenchmarkDecode(b *testing.B) {
	subject, _, body, err := events.Encode("stkgate/test", decodeCorpus()[2], time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Decode", func(b *testing.B) {
		for b.Loop() {
			if _, err := Decode(subject, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one pass", func(b *testing.B) {
		for b.Loop() {
			if _, ok := decodeOnePass(body); !ok {
				b.Fatal("not one pass")
			}
		}
	})
	b.Run("events.Decode", func(b *testing.B) {
		for b.Loop() {
			if _, err := exactDecode(subject, body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// editedBodies is every kind of event as the services write it, and
// bodies made from them byte by byte (jsonedit.Bodies), each with the
// subject its event was published on.
func editedBodies(t testing.TB, n int) (bodies [][]byte, subjects []string) {
	var bases [][]byte
	var baseSubjects []string
	for _, ev := range decodeCorpus() {
		subject, _, body, err := events.Encode("stkgate/test", ev, time.Date(2026, 12, 7, 6, 0, 0, 987654321, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		bases, baseSubjects = append(bases, body), append(baseSubjects, subject)
	}
	for _, b := range jsonedit.Bodies(bases, n) {
		bodies, subjects = append(bodies, b.Data), append(subjects, baseSubjects[b.Base])
	}
	return bodies, subjects
}

// Decode takes and skips exactly what events.Decode (and the subject
// check) does on bodies edited byte by byte: those the scan takes, and
// those it leaves to the one pass (decodeOnePass) or to events.Decode.
func TestDecodeMatchesEventsDecodeByteByByte(t *testing.T) {
	t.Parallel()
	bodies, subjects := editedBodies(t, 20000)
	scanned, onePass := 0, 0
	for i, body := range bodies {
		if env, ok := events.DecodeScan(body); ok && isSubject(subjects[i], env.Type, env.Subject) {
			scanned++
		} else if _, ok := decodeOnePass(body); ok {
			onePass++
		}
		sameAsEventsDecode(t, subjects[i], body)
	}
	// The edits left some bodies to the scan, and some to the one pass.
	if scanned < len(bodies)/20 || onePass < len(bodies)/100 {
		t.Errorf("of %d bodies the scan took %d, the one pass %d", len(bodies), scanned, onePass)
	}
	t.Logf("of %d bodies the scan took %d, the one pass %d", len(bodies), scanned, onePass)
}

// A subject other than the event's is the fallback's to refuse.
func TestDecodeChecksTheSubject(t *testing.T) {
	ev := decodeCorpus()[2]
	subject, _, body, err := events.Encode("stkgate/test", ev, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"", "stk.completed", "stk.completed.", "stk.requested." + ev.Base().TrackingID,
		"stk.completedx" + ev.Base().TrackingID, subject + "0", subject[:len(subject)-1]} {
		if _, err := Decode(s, body); !errors.Is(err, events.ErrMalformed) {
			t.Errorf("Decode on subject %q: %v, want ErrMalformed", s, err)
		}
	}
	if got, err := Decode(subject, body); err != nil || !cmp.Equal(got, ev) {
		t.Errorf("Decode on its own subject: %+v, %v", got, err)
	}
}

// FuzzDecode: Decode and events.Decode agree on any body and subject
// (events.DecodeScan itself is fuzzed in events/fuzz).
func FuzzDecode(f *testing.F) {
	for _, ev := range decodeCorpus() {
		subject, _, body, err := events.Encode("stkgate/test", ev, time.Now())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(subject, body)
		f.Add(subject, []byte(strings.ReplaceAll(string(body), `,"`, ` , "`)))
		f.Add(events.Subject(events.TypeRequested, ev.Base().TrackingID), body)
	}
	f.Fuzz(func(t *testing.T, subject string, body []byte) {
		want, wantErr := exactDecode(subject, body)
		got, err := Decode(subject, body)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%q: Decode error %v, events.Decode's %v", body, err, wantErr)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("%q: Decode differs from events.Decode (-events.Decode +Decode):\n%s", body, diff)
		}
	})
}
