// Package tracing is stkgate's OpenTelemetry tracing: a tracer provider per
// service, configured from the standard OTEL_* environment, and the W3C
// traceparent carried in HTTP (Middleware for echo, Transport for clients)
// and in NATS message headers (Inject, Extract).
//
// Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set. Off, Start returns a nil
// provider, and every hook of the services is skipped where it is a nil
// check: no span, no header, no allocation on the accept path.
package tracing

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/events/kit/envconf"
	"github.com/stkgate/stkgate/events/kit/redact"
)

// Samplers OTEL_TRACES_SAMPLER accepts (the OpenTelemetry names).
const (
	SamplerAlwaysOn                = "always_on"
	SamplerAlwaysOff               = "always_off"
	SamplerTraceIDRatio            = "traceidratio"
	SamplerParentBasedAlwaysOn     = "parentbased_always_on"
	SamplerParentBasedAlwaysOff    = "parentbased_always_off"
	SamplerParentBasedTraceIDRatio = "parentbased_traceidratio"
)

// Config configures a service's tracing. FromEnv fills it; the zero Config
// is tracing off.
type Config struct {
	// Endpoint is the OTLP/HTTP traces URL spans are exported to
	// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is, or
	// OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces added); "" is off.
	Endpoint string
	// ServiceName is the service.name of the spans (OTEL_SERVICE_NAME,
	// default the service's own name).
	ServiceName string
	// Sampler is one of the Sampler* names (OTEL_TRACES_SAMPLER, default
	// parentbased_always_on), with SamplerArg its ratio
	// (OTEL_TRACES_SAMPLER_ARG, 0 to 1, default 1).
	Sampler    string
	SamplerArg float64
	// Exporter, when set, receives the spans in place of OTLP, and turns
	// tracing on without an Endpoint: tests and the dev stack's tests set
	// it (an in-memory exporter). Shutdown does not shut it down.
	Exporter sdktrace.SpanExporter
}

// FromEnv reads the tracing settings of the service name through e.
// OTEL_SDK_DISABLED=true turns tracing off whatever else is set. The
// exporter itself reads the other OTEL_EXPORTER_OTLP_* settings (headers,
// timeout, compression, certificates) as the OpenTelemetry SDK defines them.
func FromEnv(e *envconf.Env, name string) Config {
	const what = "an OTLP/HTTP collector's URL, such as http://127.0.0.1:4318"
	c := Config{
		ServiceName: e.String("OTEL_SERVICE_NAME", name),
		Sampler: e.OneOf("OTEL_TRACES_SAMPLER", SamplerParentBasedAlwaysOn,
			SamplerAlwaysOn, SamplerAlwaysOff, SamplerTraceIDRatio,
			SamplerParentBasedAlwaysOn, SamplerParentBasedAlwaysOff, SamplerParentBasedTraceIDRatio),
		SamplerArg: e.Float("OTEL_TRACES_SAMPLER_ARG", 1, 0, 1),
	}
	switch {
	case e.Raw("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "":
		c.Endpoint = e.HTTPURL("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", what)
	case e.Raw("OTEL_EXPORTER_OTLP_ENDPOINT") != "":
		if ep := e.HTTPURL("OTEL_EXPORTER_OTLP_ENDPOINT", "", what); ep != "" {
			c.Endpoint = strings.TrimSuffix(ep, "/") + "/v1/traces"
		}
	}
	if e.Bool("OTEL_SDK_DISABLED", false) {
		c.Endpoint = ""
	}
	return c
}

// On reports whether c turns tracing on.
func (c Config) On() bool { return c.Endpoint != "" || c.Exporter != nil }

// LogValue shows the settings, a password in the endpoint masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Bool("on", c.On()),
		slog.String("endpoint", redact.URLs(c.Endpoint)),
		slog.String("service_name", c.ServiceName),
		slog.String("sampler", c.Sampler),
		slog.Float64("sampler_arg", c.SamplerArg),
	)
}

// shutdownTimeout bounds the flush of the spans still queued at exit.
const shutdownTimeout = 5 * time.Second

// Start returns the tracer provider of c and the function that flushes and
// stops it (call it on exit; it logs a failed flush to log). When c is off
// the provider is nil: the services' hooks take nil for off.
func Start(c Config, log *slog.Logger) (trace.TracerProvider, func()) {
	if !c.On() {
		return nil, func() {}
	}
	if log == nil {
		log = slog.Default()
	}
	var exp sdktrace.SpanExporter = keepOpen{c.Exporter}
	if c.Exporter == nil {
		var err error
		// New only builds the client; nothing is dialled before the first
		// export, so this fails only on options, which are checked already.
		exp, err = otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(c.Endpoint))
		if err != nil {
			log.Error("tracing off: the OTLP exporter could not be made", "error", err)
			return nil, func() {}
		}
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", c.ServiceName))),
		sdktrace.WithSampler(sampler(c.Sampler, c.SamplerArg)),
	}
	if c.Exporter != nil {
		// A test reads the spans as soon as they end.
		opts = append(opts, sdktrace.WithSyncer(exp))
	} else {
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("tracing: spans not flushed at exit", "error", err)
		}
	}
}

// sampler is the sampler of the OTEL_TRACES_SAMPLER name (FromEnv checked it).
func sampler(name string, arg float64) sdktrace.Sampler {
	switch name {
	case SamplerAlwaysOn:
		return sdktrace.AlwaysSample()
	case SamplerAlwaysOff:
		return sdktrace.NeverSample()
	case SamplerTraceIDRatio:
		return sdktrace.TraceIDRatioBased(arg)
	case SamplerParentBasedAlwaysOff:
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case SamplerParentBasedTraceIDRatio:
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(arg))
	default:
		return sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
}

// keepOpen is a caller's exporter, which a provider's Shutdown must not
// shut: the dev stack's services share one.
type keepOpen struct{ sdktrace.SpanExporter }

func (keepOpen) Shutdown(context.Context) error { return nil }

// tracerName names the spans' instrumentation scope.
const tracerName = "github.com/stkgate/stkgate"

// Tracer is tp's tracer of stkgate's spans; nil when tp is (tracing off).
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(tracerName)
}
