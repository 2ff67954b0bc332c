package callback

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/events/kit/uniquekeys"
)

// TestRawAtSpans: rawAt, which has no bounds checks and trusts
// uniquekeys.Check, finds each value of a valid body exactly: brackets,
// quotes and backslashes inside strings, escapes at a string's end,
// numbers in every form, literals, whitespace. A value it mis-scanned would
// read the wrong bytes or run off the body (a panic: the service down on a
// forger's input).
func TestRawAtSpans(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		v := randomJSON(r, 0)
		body := `{"k"` + spaceJSON(r) + ":" + spaceJSON(r) + v + spaceJSON(r) + `,"z":1}`
		if err := uniquekeys.Check([]byte(body), maxJSONDepth); err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		top, end := rawAt([]byte(body), 0)
		if top.kind != '{' || end != len(body) {
			t.Fatalf("%q: rawAt ends at %d of %d", body, end, len(body))
		}
		var got [2]rawValue
		if !top.members([]string{"k", "z"}, got[:]) {
			t.Fatalf("%q: plain keys taken for escaped", body)
		}
		want := v
		switch v[0] {
		case '"':
			want = v[1 : len(v)-1]
		case 't', 'f', 'n':
			want = ""
		}
		if string(got[0].text) != want || string(got[1].text) != "1" {
			t.Fatalf("%q: k is %q, z %q", body, got[0].text, got[1].text)
		}
	}
}

func spaceJSON(r *rand.Rand) string {
	return [...]string{"", "", "", " ", "\n\t", "\r\n  "}[r.IntN(6)]
}

// randomJSON is a valid JSON value whose strings hold what a scanner of
// brackets and quotes might trip on.
func randomJSON(r *rand.Rand, depth int) string {
	n := 8
	if depth < 6 {
		n = 10
	}
	switch r.IntN(n) {
	case 0, 1, 2:
		var b strings.Builder
		b.WriteByte('"')
		for range r.IntN(6) {
			b.WriteString([...]string{`a`, `\\`, `\"`, `\/`, `\n`, `\u005c`, `\u0022`, `]`, `}`, `[`, `{`, `,`, `:`, "é", "\xff", " ", `\\\"`}[r.IntN(17)])
		}
		b.WriteByte('"')
		return b.String()
	case 3:
		return [...]string{`0`, `-0`, `1.5`, `-2.5e-3`, `1E+9`, `10e0`, `123456789012345678901234567890`}[r.IntN(7)]
	case 4:
		return [...]string{`true`, `false`, `null`}[r.IntN(3)]
	case 5, 6:
		return `[]`
	case 7:
		return `{}`
	case 8:
		var parts []string
		for range 1 + r.IntN(3) {
			parts = append(parts, spaceJSON(r)+randomJSON(r, depth+1)+spaceJSON(r))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	var parts []string
	for i := range 1 + r.IntN(3) {
		key := [...]string{`"a"`, `"}"`, `"\\"`, `"]\""`, `"\u0062"`}[i]
		parts = append(parts, spaceJSON(r)+key+spaceJSON(r)+":"+spaceJSON(r)+randomJSON(r, depth+1)+spaceJSON(r))
	}
	return "{" + strings.Join(parts, ",") + "}"
}
