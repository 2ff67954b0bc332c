// Package container holds the container images' build files, the compose
// stack and the Kubernetes manifests' tests. Its tests read every deployment
// file as its tool would (compose, kustomize, Helm's values, nats-server's
// configuration) and hold it to the code: every variable a file sets is one
// its service reads, every setting a service requires is set, and its ports
// and probes are the ones the service serves. What a service reads is not a
// list kept here: Services runs each service's own configuration readers,
// the ones its main calls (TestMainsCallTheirReaders holds that), through a
// getenv that notes every name asked.
package container

import (
	"errors"
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/stkgate/stkgate/api"
	"github.com/stkgate/stkgate/api/projector"
	callback "github.com/stkgate/stkgate/callback-ingest"
	"github.com/stkgate/stkgate/dispatcher"
	"github.com/stkgate/stkgate/dispatcher/reconciler"
	"github.com/stkgate/stkgate/dispatcher/webhooks"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/kit/service"
)

// Service is one deployable stkgate service.
type Service struct {
	// Name is its name in service.Main, in compose.yaml and in the
	// Kubernetes manifests.
	Name string
	// Main is its main package's directory, from the repository's root.
	Main string
	// Readers are the configuration readers its main calls with
	// os.Getenv, by their package's import path.
	Readers map[string]func(getenv func(string) string) error
	// MetricsSetting names its admin address (/metrics, /healthz,
	// /readyz), MetricsDefault that address's default.
	MetricsSetting, MetricsDefault string
	// ListenSetting names its public HTTP address, ListenDefault its
	// default; "" for a service that has none.
	ListenSetting, ListenDefault string
}

// ExporterPrefix starts the variables OpenTelemetry's exporter reads itself
// in every service (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, ...; CONFIG.md),
// beside the OTEL_* ones the services' tracing.FromEnv reads.
const ExporterPrefix = "OTEL_EXPORTER_OTLP_"

func reader[C any](f func(func(string) string) (C, error)) func(func(string) string) error {
	return func(getenv func(string) string) error { _, err := f(getenv); return err }
}

// Services are the five services, as their mains read their settings.
var Services = []Service{
	{
		Name: "api", Main: "api/cmd/api",
		Readers:        map[string]func(func(string) string) error{"github.com/stkgate/stkgate/api": reader(api.ConfigFromEnv)},
		MetricsSetting: "API_METRICS_ADDR", MetricsDefault: metrics.DefaultAPIAddr,
		ListenSetting: "API_ADDR", ListenDefault: api.DefaultAddr,
	},
	{
		Name: "projector", Main: "api/cmd/projector",
		Readers:        map[string]func(func(string) string) error{"github.com/stkgate/stkgate/api/projector": reader(projector.ConfigFromEnv)},
		MetricsSetting: "PROJECTOR_METRICS_ADDR", MetricsDefault: metrics.DefaultProjectorAddr,
	},
	{
		Name: "dispatcher", Main: "dispatcher/cmd/dispatcher",
		Readers: map[string]func(func(string) string) error{
			"github.com/stkgate/stkgate/dispatcher":            reader(dispatcher.ConfigFromEnv),
			"github.com/stkgate/stkgate/dispatcher/reconciler": reader(reconciler.ConfigFromEnv),
		},
		MetricsSetting: "DISPATCHER_METRICS_ADDR", MetricsDefault: metrics.DefaultDispatcherAddr,
	},
	{
		Name: "callback-ingest", Main: "callback-ingest/cmd/callback-ingest",
		Readers:        map[string]func(func(string) string) error{"github.com/stkgate/stkgate/callback-ingest": reader(callback.ConfigFromEnv)},
		MetricsSetting: "CALLBACK_METRICS_ADDR", MetricsDefault: metrics.DefaultCallbackAddr,
		ListenSetting: "CALLBACK_ADDR", ListenDefault: callback.DefaultAddr,
	},
	{
		Name: "webhooks", Main: "dispatcher/cmd/webhooks",
		Readers:        map[string]func(func(string) string) error{"github.com/stkgate/stkgate/dispatcher/webhooks": reader(webhooks.ConfigFromEnv)},
		MetricsSetting: "WEBHOOKS_METRICS_ADDR", MetricsDefault: metrics.DefaultWebhooksAddr,
	},
}

// ServiceNamed is the service name, or false.
func ServiceNamed(name string) (Service, bool) {
	i := slices.IndexFunc(Services, func(s Service) bool { return s.Name == name })
	if i < 0 {
		return Service{}, false
	}
	return Services[i], true
}

// Read runs every reader of s's main through env: the names asked (every
// reader's, service.Main's own and the admin address's) and the joined
// errors, nil when s would start on env.
func (s Service) Read(env map[string]string) (asked map[string]bool, err error) {
	asked = map[string]bool{}
	getenv := func(k string) string { asked[k] = true; return env[k] }
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(s.Readers)) {
		errs = append(errs, s.Readers[k](getenv))
	}
	_, merr := metrics.AddrSetting(getenv, s.MetricsSetting, s.MetricsDefault)
	errs = append(errs, merr)
	for _, k := range service.Settings() {
		getenv(k)
	}
	return asked, errors.Join(errs...)
}

// Reads reports whether s reads the variable name: asked by its readers on
// env (some are asked only when others are set, so env is the deployment's
// own), or one the tracing exporter reads itself.
func (s Service) Reads(env map[string]string, name string) bool {
	asked, _ := s.Read(env)
	return asked[name] || strings.HasPrefix(name, ExporterPrefix)
}

// Port is the port of the address setting name on env (its default when unset), or
// "" when it is off or not host:port.
func Port(env map[string]string, name, def string) string {
	v := strings.TrimSpace(env[name])
	if v == "" {
		v = def
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return ""
	}
	return port
}
