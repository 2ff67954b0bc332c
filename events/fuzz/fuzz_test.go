// Package fuzz_test fuzzes the events wire contract (CleanText, Encode and
// Decode, DecodeAs and DecodeScan, ParseCallbackPath). The targets live
// here, apart from the events package's own tests, because those link the
// embedded nats-server: fuzzing there would build and instrument a whole
// server for a one-second run.
// Nothing in this directory may import events/testkit.
package fuzz_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/stkgate/stkgate/events"
)

func FuzzCleanText(f *testing.F) {
	for _, s := range []string{"", "ok", "a\x00b", "\xff", "ñ\u0085\t"} {
		f.Add(s, 4)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		got := events.CleanText(s, max)
		if !utf8.ValidString(got) {
			t.Fatalf("CleanText(%q) = %q: not valid UTF-8", s, got)
		}
		if strings.ContainsFunc(got, unicode.IsControl) {
			t.Fatalf("CleanText(%q) = %q keeps a control character", s, got)
		}
		if max > 0 && utf8.RuneCountInString(got) > max {
			t.Fatalf("CleanText(%q, %d) = %q: longer than the limit", s, max, got)
		}
		if again := events.CleanText(got, max); again != got {
			t.Fatalf("CleanText is not idempotent: %q then %q", got, again)
		}
	})
}

// goldenSeeds adds the golden events (events/testdata/*.json, pinned by
// TestEncodeGolden) to f's seeds, each as written and as Encode writes it
// at the time the events tests use (requestedAt there).
func goldenSeeds(f *testing.F) {
	golden, err := filepath.Glob(filepath.Join("..", "testdata", "*.json"))
	if err != nil || len(golden) == 0 {
		f.Fatalf("golden events: %v, %d files", err, len(golden))
	}
	requestedAt := time.Date(2024, 3, 21, 11, 30, 1, 0, time.UTC)
	for _, path := range golden {
		body, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		env, ev, err := events.Decode(body)
		if err != nil {
			f.Fatalf("%s: %v", path, err)
		}
		_, _, compact, err := events.Encode(env.Source, ev, requestedAt)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(compact)
		f.Add(body)
	}
}

// FuzzDecode seeds from the golden events.
func FuzzDecode(f *testing.F) {
	goldenSeeds(f)
	f.Add([]byte(`{"specversion":"1.0","type":"stk.completed","data":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		env, ev, err := events.Decode(body)
		decodesAs[events.Requested](t, body, env, ev, err)
		decodesAs[events.Dispatched](t, body, env, ev, err)
		decodesAs[events.Completed](t, body, env, ev, err)
		decodesAs[events.LateResult](t, body, env, ev, err)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if ev.Type() != env.Type || ev.Base().TrackingID != env.Subject || env.Subject == "" {
			t.Fatalf("accepted an inconsistent event: %+v %+v", env, ev)
		}
		// What was taken means one thing: encoded again, it reads the same.
		_, _, again, err := events.Encode(env.Source, ev, env.Time)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", ev, err)
		}
		_, ev2, err := events.Decode(again)
		if err != nil {
			t.Fatalf("re-reading %s: %v", again, err)
		}
		if diff := cmp.Diff(ev, ev2); diff != "" {
			t.Fatalf("re-reading changed the event (-first +again):\n%s", diff)
		}
	})
}

// decodesAs checks events.DecodeAs[E] against Decode's answer (env, ev,
// err) for body: it takes body when Decode read it as an E, with Decode's
// envelope and event, and refuses it otherwise, with Decode's envelope.
func decodesAs[E events.Event](t *testing.T, body []byte, env events.Envelope, ev events.Event, err error) {
	t.Helper()
	got, gotErr := events.DecodeAs[E](body)
	want, isE := ev.(E) // false when Decode refused body
	typ := want.Type()
	switch {
	case isE && gotErr != nil:
		t.Fatalf("DecodeAs %s refused what Decode took: %v", typ, gotErr)
	case !isE && gotErr == nil:
		t.Fatalf("DecodeAs %s took what Decode refused or read as another type (%v)", typ, err)
	case !isE && !errors.Is(gotErr, events.ErrMalformed):
		t.Fatalf("DecodeAs %s: error not ErrMalformed: %v", typ, gotErr)
	}
	if diff := cmp.Diff(withEvent(env, want), got, exactTime); diff != "" {
		t.Fatalf("DecodeAs %s read another envelope or event (-Decode +DecodeAs):\n%s", typ, diff)
	}
}

// FuzzDecodeScan: what events.DecodeScan takes (it reads without
// encoding/json), Decode reads the same, envelope and event. Seeded from
// the golden events, and with spaces between their tokens.
func FuzzDecodeScan(f *testing.F) {
	goldenSeeds(f)
	spaced := `{ "specversion" : "1.0" ,` + "\n\t" + `"type" : "stk.requested" , "subject" : "x" ,` + "\r\n" +
		`"data" : { "tracking_id" : "x" , "amount" : -12 , "requested_at" : "2026-12-07T07:30:00.5+03:00" } }`
	f.Add([]byte(spaced))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := events.DecodeScan(body)
		if !ok {
			return
		}
		env, ev, err := events.Decode(body)
		if err != nil {
			t.Fatalf("%q: DecodeScan took it, Decode refused it: %v", body, err)
		}
		if diff := cmp.Diff(withEvent(env, ev), got, exactTime); diff != "" {
			t.Fatalf("%q: DecodeScan differs from Decode (-Decode +DecodeScan):\n%s", body, diff)
		}
	})
}

// withEvent is env's envelope with e as its data.
func withEvent[E any](env events.Envelope, e E) events.EnvelopeOf[E] {
	return events.EnvelopeOf[E]{SpecVersion: env.SpecVersion, ID: env.ID, Source: env.Source, Type: env.Type,
		Subject: env.Subject, Time: env.Time, DataContentType: env.DataContentType, Data: e}
}

// exactTime compares times as encoding/json's reading of them is to be
// matched: the same instant in the same zone, named the same, UTC as UTC.
var exactTime = cmp.Comparer(func(a, b time.Time) bool {
	ab, aErr := a.MarshalBinary()
	bb, bErr := b.MarshalBinary()
	return a.String() == b.String() && aErr == nil && bErr == nil && bytes.Equal(ab, bb)
})

// FuzzCallbackPath: whatever the path, the parser never panics, what it
// returns rebuilds the path, and only the genuine token verifies.
func FuzzCallbackPath(f *testing.F) {
	const (
		secretA = "callback-secret-A-0123456789abcdefghij"
		idOne   = "0f8fad5b-d9cb-469f-a165-70867728950e"
	)
	s, err := events.ParseCallbackSecrets(secretA)
	if err != nil {
		f.Fatal(err)
	}
	p := events.CallbackPath
	f.Add(p + idOne + "/" + s.Token(idOne))
	f.Add(p + idOne)
	f.Add(p + idOne + "/")
	f.Add(p + "/x")
	f.Add(p + idOne + "/a/b")
	f.Add("/hooks/stk-push")
	f.Add(p + "stk.>/" + strings.Repeat("A", 43))
	f.Fuzz(func(t *testing.T, path string) {
		id, tok, ok := events.ParseCallbackPath(path)
		if !ok {
			if id != "" || tok != "" {
				t.Fatalf("not ok but returned %q, %q", id, tok)
			}
			return
		}
		if id == "" || strings.Contains(id, "/") || strings.Contains(tok, "/") {
			t.Fatalf("ParseCallbackPath(%q) = %q, %q", path, id, tok)
		}
		rebuilt := p + id
		if tok != "" || strings.HasSuffix(path, "/") {
			rebuilt += "/" + tok
		}
		if rebuilt != path {
			t.Fatalf("ParseCallbackPath(%q) = %q, %q does not rebuild it (%q)", path, id, tok, rebuilt)
		}
		if s.Verify(id, tok) && tok != s.Token(id) {
			t.Fatalf("token %q verified for %q but is not its token", tok, id)
		}
	})
}
