package tracing_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/stkgate/stkgate/events/kit/envconf"
	"github.com/stkgate/stkgate/events/kit/tracing"
)

func TestFromEnv(t *testing.T) {
	t.Parallel()
	off := tracing.Config{ServiceName: "api", Sampler: tracing.SamplerParentBasedAlwaysOn, SamplerArg: 1}
	with := func(f func(*tracing.Config)) tracing.Config { c := off; f(&c); return c }
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    tracing.Config
		wantErr string
	}{
		{"off by default", nil, off, ""},
		{"base endpoint gets the traces path", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
			with(func(c *tracing.Config) { c.Endpoint = "http://collector:4318/v1/traces" }), ""},
		{"traces endpoint as it is, before the base one", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c:4318/x"},
			with(func(c *tracing.Config) { c.Endpoint = "https://c:4318/x" }), ""},
		{"disabled wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, off, ""},
		{"name and sampler", map[string]string{"OTEL_SERVICE_NAME": "stkgate-api-eu", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			with(func(c *tracing.Config) {
				c.ServiceName, c.Sampler, c.SamplerArg = "stkgate-api-eu", tracing.SamplerParentBasedTraceIDRatio, 0.25
			}), ""},
		{"endpoint not a URL", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, off, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"unknown sampler", map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"}, off, "OTEL_TRACES_SAMPLER"},
		{"ratio above 1", map[string]string{"OTEL_TRACES_SAMPLER_ARG": "2"}, off, "OTEL_TRACES_SAMPLER_ARG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := envconf.New(func(k string) string { return tc.env[k] })
			got := tracing.FromEnv(e, "api")
			err := e.Err()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOffIsNil: with tracing off there is no provider, so that every hook
// of the services is skipped.
func TestOffIsNil(t *testing.T) {
	t.Parallel()
	tp, stop := tracing.Start(tracing.Config{ServiceName: "api"}, nil)
	defer stop()
	if tp != nil || tracing.Tracer(tp) != nil {
		t.Fatalf("provider %v with tracing off, want nil", tp)
	}
}

// TestLogLines: a line logged with a span's context, or through the
// logger of a span's work, carries its trace_id and span_id; others none.
func TestLogLines(t *testing.T) {
	t.Parallel()
	tp, stop := tracing.Start(tracing.Config{ServiceName: "test", Exporter: tracetest.NewInMemoryExporter()}, nil)
	defer stop()
	ctx, span := tracing.Tracer(tp).Start(context.Background(), "work")
	defer span.End()
	sc := span.SpanContext()
	want := "trace_id=" + sc.TraceID().String() + " span_id=" + sc.SpanID().String()

	var b bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewTextHandler(&b, nil))).With("service", "test")
	log.InfoContext(ctx, "with context")
	tracing.Logger(log, ctx).Info("span's logger")
	log.Info("without")
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], want) || !strings.Contains(lines[1], want) || strings.Contains(lines[2], "trace_id") {
		t.Errorf("log lines:\n%s\nwant the first two with %s, the last without", b.String(), want)
	}
}

// TestExportsOTLP: with an endpoint, spans reach it over OTLP/HTTP, at the
// latest when the provider is stopped (the flush on exit).
func TestExportsOTLP(t *testing.T) {
	t.Parallel()
	got := make(chan string, 10)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got <- r.Method + " " + r.URL.Path + " " + r.Header.Get("Content-Type")
	}))
	defer collector.Close()
	e := envconf.New(func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL}[k]
	})
	cfg := tracing.FromEnv(e, "api")
	if err := e.Err(); err != nil || !cfg.On() {
		t.Fatalf("config %+v, err %v: want tracing on", cfg, err)
	}
	tp, stop := tracing.Start(cfg, nil)
	_, span := tracing.Tracer(tp).Start(context.Background(), "work")
	span.End()
	stop()
	select {
	case req := <-got:
		if req != "POST /v1/traces application/x-protobuf" {
			t.Errorf("collector got %q, want POST /v1/traces application/x-protobuf", req)
		}
	default:
		t.Fatal("no export reached the collector by the end of stop")
	}
}
