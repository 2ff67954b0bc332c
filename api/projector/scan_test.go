package projector

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stkgate/stkgate/events"
)

// scanEdits are changes made to a body, each where JSON or decodeScan's
// reading of it is delicate.
var scanEdits = []string{
	`\`, `\"`, `\u0041`, `\n`, " ", "\t", "\n", "\x01", "é", "\xff", "\xe2\x82", `"`, `,`, `:`, `{`, `}`, `[`, `]`,
	`null`, `0`, `-`, `-0`, `01`, `1.5`, `1e3`, `E`, `.`, `9999999999999999999`, `123456789012345678`,
	`+03:00`, `Z`, `T`, `2026-12-07T04:30:00+03:00`, `24:00:00`, `true`,
	`"data":{}`, `"data":{"tracking_id":"x"},`, `"type":"stk.completed",`, `"Data"`, `"TYPE"`, `"Amount"`,
	`"amount":1,`, `"receipt":"R",`, `"callback_url":"u",`, `"learnt_at":"2026-12-07T04:30:00Z",`, `"x":1,`,
	`"subject":"6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b01",`, `"specversion":"1.0",`,
}

// decodeScanBodies is every kind of event as the services write it, then
// bodies of them changed at random byte by byte: edits put in, bytes cut
// out, cut short, spaces around the tokens.
func decodeScanBodies(t testing.TB, n int) (bodies [][]byte, subjects []string) {
	rng := rand.New(rand.NewPCG(5, 17))
	now := time.Date(2026, 12, 7, 6, 0, 0, 987654321, time.UTC)
	for _, ev := range decodeCorpus() {
		subject, _, body, err := events.Encode("stkgate/test", ev, now)
		if err != nil {
			t.Fatal(err)
		}
		bodies, subjects = append(bodies, body), append(subjects, subject)
		// Spaces between every token, as another writer may put them.
		spaced := strings.NewReplacer(`,"`, " ,\n\t\"", `":`, `" : `, `{`, "{ ", `}`, " }\r\n").Replace(string(body))
		bodies, subjects = append(bodies, []byte(spaced)), append(subjects, subject)
	}
	base := len(bodies)
	for range n {
		k := rng.IntN(base)
		body := bytes.Clone(bodies[k])
		for range 1 + rng.IntN(3) {
			at := rng.IntN(len(body) + 1)
			switch rng.IntN(4) {
			case 0, 1:
				edit := scanEdits[rng.IntN(len(scanEdits))]
				body = append(body[:at:at], append([]byte(edit), body[at:]...)...)
			case 2:
				if at < len(body) {
					cut := min(len(body), at+1+rng.IntN(4))
					body = append(body[:at:at], body[cut:]...)
				}
			case 3:
				if rng.IntN(4) == 0 {
					body = body[:at]
				}
			}
		}
		bodies, subjects = append(bodies, body), append(subjects, subjects[k])
	}
	return bodies, subjects
}

// decodeScan vouches only for what events.Decode reads the same: on every
// body it takes, events.Decode (and the subject check) gives the same
// event; and Decode, through it, takes and skips exactly what
// events.Decode does.
func TestDecodeScanMatchesEventsDecode(t *testing.T) {
	bodies, subjects := decodeScanBodies(t, 20000)
	scanned := 0
	for i, body := range bodies {
		want, wantErr := exactDecode(subjects[i], body)
		if got, ok := decodeScan(subjects[i], body); ok {
			scanned++
			if wantErr != nil {
				t.Fatalf("%q: decodeScan took it, events.Decode refused it: %v", body, wantErr)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("%q: decodeScan differs from events.Decode (-events.Decode +decodeScan):\n%s", body, diff)
			}
		}
		got, err := Decode(subjects[i], body)
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
	// The edits left some bodies to the scan, and made others its
	// fallback's.
	if scanned < len(bodies)/20 || scanned > len(bodies)*9/10 {
		t.Errorf("decodeScan took %d of %d bodies", scanned, len(bodies))
	}
	t.Logf("decodeScan took %d of %d bodies", scanned, len(bodies))
}

// A subject other than the event's is the fallback's to refuse.
func TestDecodeScanChecksTheSubject(t *testing.T) {
	ev := decodeCorpus()[2]
	subject, _, body, err := events.Encode("stkgate/test", ev, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"", "stk.completed", "stk.completed.", "stk.requested." + ev.Base().TrackingID,
		"stk.completedx" + ev.Base().TrackingID, subject + "0", subject[:len(subject)-1]} {
		if _, ok := decodeScan(s, body); ok {
			t.Errorf("decodeScan took a %s on subject %q", ev.Type(), s)
		}
		if _, err := Decode(s, body); !errors.Is(err, events.ErrMalformed) {
			t.Errorf("Decode on subject %q: %v, want ErrMalformed", s, err)
		}
	}
}

// FuzzDecode: Decode and events.Decode agree on any body.
func FuzzDecode(f *testing.F) {
	bodies, subjects := decodeScanBodies(f, 200)
	for i, b := range bodies {
		f.Add(subjects[i], b)
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
