package events

import (
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events/kit/metrics"
)

// observePublish counts a publish of ev (a nil reg: nothing), and a
// payment's final state when ev is a Completed stored for the first time.
// A second stk.completed of a payment (a callback racing a query) is stored
// once, under one Nats-Msg-Id: JetStream reports it a duplicate, and it is
// not counted again.
func observePublish(reg *metrics.Registry, ev Event, ack *jetstream.PubAck, err error) {
	if reg == nil {
		return
	}
	switch {
	case err != nil:
		reg.Published(ev.Type(), "error")
		return
	case ack != nil && ack.Duplicate:
		reg.Published(ev.Type(), "duplicate")
		return
	}
	reg.Published(ev.Type(), "ok")
	if c, ok := ev.(Completed); ok {
		_, label := Outcome(c.ResultCode)
		reg.PaymentFinal(label, c.Source, c.RequestedAt, c.CompletedAt)
	}
}
