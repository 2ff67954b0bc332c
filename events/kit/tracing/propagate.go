package tracing

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// propagator carries the W3C traceparent (and tracestate): the one format
// stkgate reads and writes, in HTTP and NATS headers alike.
var propagator propagation.TraceContext

// Attribute keys of stkgate's spans: OpenTelemetry's semantic conventions
// where they name the thing, and stkgate.tracking_id for the payment.
const (
	KeyTrackingID = attribute.Key("stkgate.tracking_id")
	keyMsgSystem  = attribute.Key("messaging.system")
	keyMsgDest    = attribute.Key("messaging.destination.name")
	keyMsgOp      = attribute.Key("messaging.operation.type")
	keyMsgID      = attribute.Key("messaging.message.id")
	keyConsumer   = attribute.Key("messaging.consumer.group.name")
	keyMethod     = attribute.Key("http.request.method")
	keyRoute      = attribute.Key("http.route")
	keyStatus     = attribute.Key("http.response.status_code")
	keyServer     = attribute.Key("server.address")
	keyURLPath    = attribute.Key("url.path")
)

// Inject writes ctx's span context into h as traceparent; nothing when ctx
// has none.
func Inject(ctx context.Context, h nats.Header) {
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// Extract is ctx with the remote span context of h's traceparent, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// StartPublish starts the producer span of publishing to subject, to be
// ended once JetStream acknowledged, and returns the message to publish:
// body with the span's traceparent in its headers.
func StartPublish(ctx context.Context, tr trace.Tracer, subject, trackingID string, body []byte) (*nats.Msg, trace.Span) {
	ctx, span := tr.Start(ctx, "publish "+subjectKind(subject), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(keyMsgSystem.String("nats"), keyMsgDest.String(subject), keyMsgOp.String("send"), KeyTrackingID.String(trackingID)))
	msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
	Inject(ctx, msg.Header)
	return msg, span
}

// StartProcess starts the consumer span of handling a message of subject
// with headers h, as a child of the span that published it, and returns
// ctx carrying it.
func StartProcess(ctx context.Context, tr trace.Tracer, consumer, subject string, h nats.Header) (context.Context, trace.Span) {
	return tr.Start(Extract(ctx, h), "process "+subjectKind(subject), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(keyMsgSystem.String("nats"), keyMsgDest.String(subject), keyMsgOp.String("process"),
			keyConsumer.String(consumer), KeyTrackingID.String(trackingIDOf(subject))))
}

// End ends span, marking it failed when err is not nil.
func End(span trace.Span, err error) {
	Fail(span, err)
	span.End()
}

// Fail marks span failed with err; nothing when err is nil.
func Fail(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}

// subjectKind is a subject without its tracking id, "stk.requested" of
// "stk.requested.<id>": the span name, which must not be one per payment.
func subjectKind(subject string) string {
	for i := len(subject) - 1; i >= 0; i-- {
		if subject[i] == '.' {
			return subject[:i]
		}
	}
	return subject
}

// trackingIDOf is the last token of a subject: every stkgate subject ends
// with the tracking id.
func trackingIDOf(subject string) string {
	if k := subjectKind(subject); k != subject {
		return subject[len(k)+1:]
	}
	return ""
}

// StartServer starts the server span of r, as a child of the caller's
// traceparent when r has one, else of parent's span. Safaricom's callback
// carries none: callback-ingest passes the payment's stored span context
// as parent. A zero start is now. EndServer names it for its route, known
// only once the router ran.
func StartServer(parent context.Context, tr trace.Tracer, r *http.Request, start time.Time) (context.Context, trace.Span) {
	return startServer(propagator.Extract(parent, propagation.HeaderCarrier(r.Header)), tr, r, start)
}

// StartJoined is StartServer for a request that joins the trace whose
// traceparent is in stored (a stored message's headers) instead of its own
// headers': Safaricom's callback carries none, and whatever traceparent a
// sender of the public callback URL adds is not believed.
func StartJoined(ctx context.Context, tr trace.Tracer, r *http.Request, stored nats.Header, start time.Time) (context.Context, trace.Span) {
	return startServer(Extract(ctx, stored), tr, r, start)
}

func startServer(parent context.Context, tr trace.Tracer, r *http.Request, start time.Time) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(keyMethod.String(r.Method))}
	if !start.IsZero() {
		opts = append(opts, trace.WithTimestamp(start))
	}
	return tr.Start(parent, r.Method, opts...)
}

// EndServer names a server span for its route (the route's pattern, never
// the path, which holds tracking ids), records the answer's status and the
// payment's tracking id ("" when none) and ends it.
func EndServer(span trace.Span, method, route string, status int, trackingID string) {
	if route != "" {
		span.SetName(method + " " + route)
		span.SetAttributes(keyRoute.String(route))
	}
	span.SetAttributes(keyStatus.Int(status))
	if trackingID != "" {
		span.SetAttributes(KeyTrackingID.String(trackingID))
	}
	if status >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(status))
	}
	span.End()
}

// Transport sends requests through base with a client span each and the
// span's traceparent in the request's headers. A nil base is
// http.DefaultTransport.
func Transport(tr trace.Tracer, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{tr: tr, base: base}
}

type transport struct {
	tr   trace.Tracer
	base http.RoundTripper
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	// The path only: a query may carry secrets (Daraja's OAuth call has
	// none there, but a span is no place to find out).
	ctx, span := t.tr.Start(r.Context(), r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(keyMethod.String(r.Method), keyServer.String(r.URL.Hostname()), keyURLPath.String(r.URL.Path)))
	r = r.Clone(ctx)
	propagator.Inject(ctx, propagation.HeaderCarrier(r.Header))
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		End(span, err)
		return nil, err
	}
	span.SetAttributes(keyStatus.Int(resp.StatusCode))
	if resp.StatusCode >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(resp.StatusCode))
	}
	span.End()
	return resp, nil
}

// Client is hc with its transport wrapped in Transport: a copy, hc is left
// as it is.
func Client(tr trace.Tracer, hc *http.Client) *http.Client {
	c := *hc
	c.Transport = Transport(tr, hc.Transport)
	return &c
}
