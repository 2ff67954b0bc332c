package events

import (
	"context"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events/kit/tracing"
)

// publishTraced is Publish with tracing on: a producer span around the
// publish, its traceparent in the message's headers. The traceparent stored
// with stk.requested is also how a payment's callback, which Safaricom
// sends without one, joins the payment's trace (docs/TRACING.md).
func (p *Publisher) publishTraced(ctx context.Context, subject, trackingID string, body []byte, header nats.Header, opts []jetstream.PublishOpt) (*jetstream.PubAck, error) {
	msg, span := tracing.StartPublish(ctx, p.Tracer, subject, trackingID, body)
	for k, v := range header {
		msg.Header[k] = slices.Clone(v)
	}
	ack, err := p.JS.PublishMsg(ctx, msg, opts...)
	if err != nil {
		err = fmt.Errorf("publish %s: %w", subject, err)
	}
	tracing.End(span, err)
	return ack, err
}
