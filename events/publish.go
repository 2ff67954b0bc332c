package events

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/events/kit/metrics"
)

// Publisher publishes events to the STK stream and waits for JetStream's ack,
// so a nil error means the event is durable.
type Publisher struct {
	JS     jetstream.JetStream
	Source string           // CloudEvents source, e.g. "stkgate/api"
	Now    func() time.Time // nil means time.Now
	// Metrics counts the publishes; nil: not counted.
	Metrics *metrics.Registry
	// Tracer, when set, gives each publish a producer span and carries its
	// traceparent in the message's headers (publishTraced); nil is off.
	Tracer trace.Tracer
}

// Publish stores ev in the stream. A publish JetStream reports as a duplicate
// (the same event published before, within DuplicateWindow) is a success: the
// event is stored once. opts are added to the publish's own (its
// Nats-Msg-Id, the expected stream).
func (p *Publisher) Publish(ctx context.Context, ev Event, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return p.PublishWithHeader(ctx, ev, nil, opts...)
}

// PublishWithHeader is Publish with header's values added to the message's
// headers (header itself is not changed; nil adds none).
func (p *Publisher) PublishWithHeader(ctx context.Context, ev Event, header nats.Header, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	subject, msgID, body, err := Encode(p.Source, ev, now())
	if err != nil {
		return nil, err
	}
	opts = append([]jetstream.PublishOpt{jetstream.WithMsgID(msgID), jetstream.WithExpectStream(StreamName)}, opts...)
	var ack *jetstream.PubAck
	if p.Tracer != nil {
		ack, err = p.publishTraced(ctx, subject, ev.Base().TrackingID, body, header, opts)
		observePublish(p.Metrics, ev, ack, err)
		return ack, err
	}
	if header == nil {
		ack, err = p.JS.Publish(ctx, subject, body, opts...)
	} else {
		// A copy: the publish adds its own headers to the message's.
		ack, err = p.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: maps.Clone(header), Data: body}, opts...)
	}
	observePublish(p.Metrics, ev, ack, err)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", subject, err)
	}
	return ack, nil
}
