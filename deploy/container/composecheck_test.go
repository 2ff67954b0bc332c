package container

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// composeEnv is the environment compose gives service name, filled from the
// test's .env (secrets()).
func composeEnv(t *testing.T, c composeFile, name string) map[string]string {
	t.Helper()
	s, ok := c.Services[name]
	if !ok {
		t.Fatalf("compose.yaml: no service %s", name)
	}
	env := map[string]string{}
	for k, raw := range s.Environment {
		v, err := interpolate(raw, secrets())
		if err != nil {
			t.Fatalf("%s: %s: %v", name, k, err)
		}
		env[k] = v
	}
	return env
}

// TestComposeSettingsAreTheServices: every variable compose sets for a
// service is one the service reads, and the service starts on them (every
// required one set, every one well-formed); each stateless service runs
// twice, read-only, without capabilities.
func TestComposeSettingsAreTheServices(t *testing.T) {
	c := readCompose(t)
	for _, svc := range Services {
		t.Run(svc.Name, func(t *testing.T) {
			env := composeEnv(t, c, svc.Name)
			asked, err := svc.Read(env)
			if err != nil {
				t.Errorf("%s would not start on compose.yaml's environment:\n%v", svc.Name, err)
			}
			for k := range env {
				if !asked[k] && !strings.HasPrefix(k, ExporterPrefix) {
					t.Errorf("compose.yaml sets %s for %s, which does not read it", k, svc.Name)
				}
			}
			s := c.Services[svc.Name]
			if s.Deploy.Replicas < 2 {
				t.Errorf("%d replicas, want 2 (stateless: any number may run)", s.Deploy.Replicas)
			}
			if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) {
				t.Errorf("read_only %v, cap_drop %q; want a read-only root and no capabilities", s.ReadOnly, s.CapDrop)
			}
			if env["NATS_STREAM_REPLICAS"] != "3" {
				t.Errorf("NATS_STREAM_REPLICAS %q, want 3 (a replica on each of the three nodes)", env["NATS_STREAM_REPLICAS"])
			}
		})
	}
}

// TestComposePortsAndHealth: each published port is the service's listen
// port as its settings make it, and each health check asks the service's
// /readyz on its admin port, as its settings make it.
func TestComposePortsAndHealth(t *testing.T) {
	c := readCompose(t)
	for _, svc := range Services {
		t.Run(svc.Name, func(t *testing.T) {
			env := composeEnv(t, c, svc.Name)
			s := c.Services[svc.Name]
			admin := Port(env, svc.MetricsSetting, svc.MetricsDefault)
			want := []string{"CMD", "/healthcheck", "http://127.0.0.1:" + admin + readyPath}
			if !slices.Equal(s.Healthcheck.Test, want) {
				t.Errorf("healthcheck %q, want %q", s.Healthcheck.Test, want)
			}
			if svc.ListenSetting == "" {
				if len(s.Ports) > 0 {
					t.Errorf("publishes %q, but serves no HTTP of its own", s.Ports)
				}
				return
			}
			listen := Port(env, svc.ListenSetting, svc.ListenDefault)
			if len(s.Ports) == 0 {
				t.Errorf("publishes nothing; it serves on %s", listen)
			}
			for _, raw := range s.Ports {
				p, err := interpolate(raw, secrets())
				if err != nil {
					t.Fatalf("ports %q: %v", raw, err)
				}
				parts := strings.Split(p, ":")
				if len(parts) != 3 || parts[0] != "127.0.0.1" || parts[2] != listen {
					t.Errorf("publishes %q, want 127.0.0.1:<host ports>:%s", p, listen)
					continue
				}
				if n := hostPorts(parts[1]); n < s.Deploy.Replicas {
					t.Errorf("publishes %q: %d host ports for %d replicas", p, n, s.Deploy.Replicas)
				}
			}
		})
	}
}

// hostPorts counts the ports of "8080" or "8080-8081".
func hostPorts(r string) int {
	lo, hi, ok := strings.Cut(r, "-")
	if !ok {
		hi = lo
	}
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || b < a {
		return 0
	}
	return b - a + 1
}

// TestComposeRateFitsDarajaBudget: the limits are per process, so with
// replicas a client's rate is the api's limit times its replicas, and
// Daraja's calls the dispatchers' budget times theirs: a client's rate must
// stay within half of it (each payment may cost a push and a query).
func TestComposeRateFitsDarajaBudget(t *testing.T) {
	c := readCompose(t)
	num := func(service, name string, def float64) float64 {
		v := composeEnv(t, c, service)[name]
		if v == "" {
			return def
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("%s: %s %q: %v", service, name, v, err)
		}
		return f
	}
	rate := num("api", "API_RATE_LIMIT", 10) * float64(c.Services["api"].Deploy.Replicas)
	budget := num("dispatcher", "DARAJA_MAX_RPS", 20) * float64(c.Services["dispatcher"].Deploy.Replicas)
	if rate > budget/2 {
		t.Errorf("a client may ask %g/s across the api replicas; the dispatchers call Daraja at %g/s: want at most half", rate, budget)
	}
}

// TestComposeNoSecretOnCommandLines: no command interpolates a variable,
// so no secret shows in a process list or in docker inspect's Args.
func TestComposeNoSecretOnCommandLines(t *testing.T) {
	for name, s := range readCompose(t).Services {
		for _, a := range s.Command {
			if strings.Contains(a, "$") {
				t.Errorf("%s: command %q interpolates a variable", name, a)
			}
		}
		for _, a := range s.Healthcheck.Test {
			if strings.Contains(a, "$") {
				t.Errorf("%s: healthcheck %q interpolates a variable", name, a)
			}
		}
	}
}

// TestComposeSmokeOverride: compose.smoke.yaml (make container-test) over
// compose.yaml still gives each service only what it reads and what it
// starts on, and the dispatcher's Daraja is the simulator's address in the
// network namespace they share.
func TestComposeSmokeOverride(t *testing.T) {
	base := readCompose(t)
	var smoke composeFile
	b, err := os.ReadFile("compose.smoke.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &smoke); err != nil {
		t.Fatalf("compose.smoke.yaml: %v", err)
	}
	env := secrets()
	env["SMOKE_DATABASE_URL"] = "postgres://postgres@host.docker.internal:5433/stkgate_smoke?sslmode=disable"
	for name, o := range smoke.Services {
		svc, ok := ServiceNamed(name)
		if !ok {
			continue // the simulator
		}
		merged := composeEnv(t, base, name)
		for k, raw := range o.Environment {
			v, err := interpolate(raw, env)
			if err != nil {
				t.Fatalf("%s: %s: %v", name, k, err)
			}
			merged[k] = v
		}
		asked, err := svc.Read(merged)
		if err != nil {
			t.Errorf("%s would not start in the smoke stack:\n%v", name, err)
		}
		for k := range merged {
			if !asked[k] {
				t.Errorf("the smoke stack sets %s for %s, which does not read it", k, name)
			}
		}
	}
	sim := smoke.Services["daraja-sim"].Environment["DARAJA_SIM_ADDR"]
	if got, want := smoke.Services["dispatcher"].Environment["DARAJA_BASE_URL"], "http://"+sim; got != want {
		t.Errorf("the smoke dispatcher's Daraja is %q; the simulator listens on %s", got, sim)
	}
}
