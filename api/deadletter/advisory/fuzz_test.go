package advisory

import (
	"testing"

	"github.com/stkgate/stkgate/events"
)

// FuzzParseAdvisory: nothing panics, and what is accepted can name a dead
// letter's subject.
func FuzzParseAdvisory(f *testing.F) {
	f.Add(events.AdvisoryTerminatedPrefix+".STK.c", []byte(`{"type":"io.nats.jetstream.advisory.v1.terminated","stream":"STK","consumer":"c","stream_seq":1,"reason":"x"}`))
	f.Add(events.AdvisoryMaxDeliveriesPrefix+".STK.c", []byte(`{"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"STK","consumer":"c","stream_seq":2,"deliveries":3}`))
	f.Add("x", []byte(`[]`))
	f.Fuzz(func(t *testing.T, subject string, body []byte) {
		a, kind, err := Parse(subject, body)
		if err != nil {
			return
		}
		if kind == "" || a.Stream != events.StreamName || a.StreamSeq == 0 || !ValidToken(a.Consumer) {
			t.Errorf("accepted %+v as %q", a, kind)
		}
	})
}
