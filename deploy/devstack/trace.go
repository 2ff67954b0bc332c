package devstack

import sdktrace "go.opentelemetry.io/otel/sdk/trace"

// exportTraces sends every service's spans to exp, when set.
func (c *serviceConfigs) exportTraces(exp sdktrace.SpanExporter) {
	if exp == nil {
		return
	}
	c.api.Tracing.Exporter = exp
	c.projector.Tracing.Exporter = exp
	c.dispatcher.Tracing.Exporter = exp
	c.reconciler.Tracing.Exporter = exp
	c.callback.Tracing.Exporter = exp
}
