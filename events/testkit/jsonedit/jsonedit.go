// Package jsonedit makes bodies edited byte by byte from the plain JSON
// the services write, for the differential tests of the hand-written
// readers of events (events.DecodeScan, DecodeAs, the projector's Decode)
// against encoding/json: each edit is where JSON, or a reader of it, is
// delicate.
package jsonedit

import (
	"bytes"
	"math/rand/v2"
	"strings"
)

// edits are what Bodies puts into a body: escapes, bytes that are not
// UTF-8 or not allowed in a string, JSON's punctuation, numbers and times
// at their edges, keys of the envelope and of an event's data, in and out
// of case.
var edits = []string{
	`\`, `\"`, `\u0041`, `\n`, " ", "\t", "\n", "\x01", "é", "\xff", "\xe2\x82", `"`, `,`, `:`, `{`, `}`, `[`, `]`,
	`null`, `0`, `-`, `-0`, `01`, `1.5`, `1e3`, `E`, `.`, `9999999999999999999`, `123456789012345678`,
	`+03:00`, `Z`, `T`, `2026-12-07T04:30:00+03:00`, `24:00:00`, `true`,
	`"data":{}`, `"data":{"tracking_id":"x"},`, `"type":"stk.completed",`, `"type":"stk.requested",`, `"Data"`, `"TYPE"`, `"Amount"`,
	`"amount":1,`, `"receipt":"R",`, `"callback_url":"u",`, `"learnt_at":"2026-12-07T04:30:00Z",`, `"x":1,`,
	`"subject":"550e8400-e29b-41d4-a716-446655440000",`, `"specversion":"1.0",`, `"id":"i",`, `"source":"s",`,
	`"time":"2026-12-07T04:30:00Z",`, `"datacontenttype":"text/plain",`,
}

// Body is one body Bodies made, and the index in bases of the body it was
// made from (a caller keeps the subject its base was published on).
type Body struct {
	Data []byte
	Base int
}

// Bodies returns each of bases, each again with spaces between its tokens
// (as another writer may put them), then n bodies made from them at
// random, each by one to three edits: one of edits put in, a few bytes cut
// out, or cut short there. The random source is seeded: the same bases
// give the same bodies every run.
func Bodies(bases [][]byte, n int) []Body {
	rng := rand.New(rand.NewPCG(5, 17))
	spaces := strings.NewReplacer(`,"`, " ,\n\t\"", `":`, `" : `, `{`, "{ ", `}`, " }\r\n")
	var out []Body
	for i, b := range bases {
		out = append(out, Body{b, i}, Body{[]byte(spaces.Replace(string(b))), i})
	}
	whole := len(out)
	for range n {
		from := out[rng.IntN(whole)]
		body := bytes.Clone(from.Data)
		for range 1 + rng.IntN(3) {
			at := rng.IntN(len(body) + 1)
			switch rng.IntN(4) {
			case 0, 1:
				edit := edits[rng.IntN(len(edits))]
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
		out = append(out, Body{body, from.Base})
	}
	return out
}
