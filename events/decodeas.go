package events

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// DecodeAs is Decode for a message that is to hold an event of type E, for
// a consumer of one type: the envelope and its data are decoded together,
// in one pass, where Decode copies the data out and scans it again. It
// accepts what Decode accepts as an E, with the same event, and nothing
// else: any other message (another type included) is ErrMalformed.
//
// A body as the services write it is read first without encoding/json
// (scan, as DecodeScan): it was most of the dispatcher's encoding/json
// CPU, a stk.requested each. Scan vouches only for what Decode reads the
// same, so what it takes as an E is answered as Decode would; what it
// does not take, or takes as another type, goes on to the one pass and
// Decode as before, which give the error.
//
// The one pass is taken only when it is sure to read what Decode reads. A
// body that names its data more than once (Decode keeps the last; one pass
// would merge them, the first's fields surviving where the last leaves
// them out), that holds a \u escape (a key may be written with escapes) or
// that is not a well-formed E in the one pass is given to Decode.
func DecodeAs[E Event](body []byte) (EnvelopeOf[E], error) {
	var d scanned
	if env, ok := scan(body, &d); ok {
		if out := withData(env, *new(E)); d.into(&out.Data, env.Type) {
			return out, nil
		}
	}
	if !bytes.Contains(body, []byte(`\u`)) && DataKeys(body) == 1 {
		var env EnvelopeOf[*E]
		if err := json.Unmarshal(body, &env); err == nil && env.Data != nil && env.SpecVersion == SpecVersion {
			ev := *env.Data
			if id := ev.Base().TrackingID; env.Type == ev.Type() && id != "" && id == env.Subject {
				return withData(env, ev), nil
			}
		}
	}
	raw, ev, err := Decode(body)
	var zero E
	out := withData(raw, zero)
	if err != nil {
		return out, err
	}
	e, ok := ev.(E)
	if !ok {
		return out, fmt.Errorf("%w: type %q, want %q", ErrMalformed, raw.Type, zero.Type())
	}
	out.Data = e
	return out, nil
}

// withData is env's envelope with data d.
func withData[D, E any](env EnvelopeOf[D], d E) EnvelopeOf[E] {
	return EnvelopeOf[E]{
		SpecVersion:     env.SpecVersion,
		ID:              env.ID,
		Source:          env.Source,
		Type:            env.Type,
		Subject:         env.Subject,
		Time:            env.Time,
		DataContentType: env.DataContentType,
		Data:            d,
	}
}

// DataKeys counts the strings "data" in body, in any case, as
// encoding/json matches keys to fields: a reader decoding an envelope and
// its data in one pass vouches only for a body with one.
func DataKeys(body []byte) int {
	n := 0
	for i := 0; i+6 <= len(body); i++ {
		if body[i] == '"' && body[i+5] == '"' &&
			body[i+1]|0x20 == 'd' && body[i+2]|0x20 == 'a' && body[i+3]|0x20 == 't' && body[i+4]|0x20 == 'a' {
			n++
		}
	}
	return n
}

// into sets *p to the event scan read d as, of type typ, when *p is of
// that type (a type switch where DecodeAs's Event would cost an allocation
// a message), and says whether it did. Any other E (a pointer, an
// interface, a type that embeds an event) is not set: DecodeAs then reads
// as before.
func (d *scanned) into(p any, typ string) bool {
	switch p := p.(type) {
	case *Requested:
		if typ != TypeRequested {
			return false
		}
		*p = d.requested()
	case *Dispatched:
		if typ != TypeDispatched {
			return false
		}
		*p = d.dispatched()
	case *Completed:
		if typ != TypeCompleted {
			return false
		}
		*p = d.completed()
	case *LateResult:
		if typ != TypeLateResult {
			return false
		}
		*p = d.late()
	default:
		return false
	}
	return true
}
