package container

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"gopkg.in/yaml.v3"
)

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	ReadOnly    bool              `yaml:"read_only"`
	CapDrop     []string          `yaml:"cap_drop"`
	Deploy      struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Volumes []string `yaml:"volumes"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("compose.yaml: no services")
	}
	return c
}

// variable is compose's interpolation: ${NAME}, ${NAME:-default},
// ${NAME-default}, ${NAME:?error}, ${NAME?error}.
var variable = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate fills s from env as docker compose does (an empty value
// counts as unset for the ":" forms), or says which required variable is
// missing.
func interpolate(s string, env map[string]string) (string, error) {
	var missing []string
	out := variable.ReplaceAllStringFunc(s, func(m string) string {
		p := variable.FindStringSubmatch(m)
		v, set := env[p[1]]
		unset := !set || (strings.HasPrefix(p[2], ":") && v == "")
		switch {
		case !unset:
			return v
		case strings.HasSuffix(p[2], "-"):
			return p[3]
		case strings.HasSuffix(p[2], "?"):
			missing = append(missing, p[1])
		}
		return ""
	})
	if missing != nil {
		return "", fmt.Errorf("required: %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// secrets is an .env file for the tests.
func secrets() map[string]string {
	return map[string]string{
		"POSTGRES_PASSWORD":      "pg-0123456789abcdef",
		"NATS_PASSWORD":          "0123456789abcdef0123456789abcdef",
		"NATS_CLUSTER_PASSWORD":  "fedcba9876543210fedcba9876543210",
		"DARAJA_CONSUMER_KEY":    "ck",
		"DARAJA_CONSUMER_SECRET": "cs",
		"CALLBACK_BASE_URL":      "https://pay.example.com",
		"CALLBACK_SECRET":        "callback-secret-0123456789abcdef0123456789",
		"WEBHOOK_SECRET_KEY":     "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
	}
}

// TestComposeAPIOnLoopback: the api is published on the host's loopback
// only (or not at all: the compose network alone).
func TestComposeAPIOnLoopback(t *testing.T) {
	api, ok := readCompose(t).Services["api"]
	if !ok {
		t.Fatal("no api service")
	}
	for _, p := range api.Ports {
		if !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("api publishes %q: want 127.0.0.1:<host port>:<port>", p)
		}
	}
}

// TestComposeNATSImagePinned: every NATS node runs exactly the release of the
// embedded server the tests run against (go.mod's nats-server): no floating
// tag that could bring an older release, or one never tested.
func TestComposeNATSImagePinned(t *testing.T) {
	var nodes int
	for name, s := range readCompose(t).Services {
		if !strings.HasPrefix(s.Image, "stkgate/nats-server") {
			continue
		}
		nodes++
		if want := "stkgate/nats-server:" + server.VERSION; s.Image != want {
			t.Errorf("%s: image %q, want %q (the embedded nats-server's version)", name, s.Image, want)
		}
	}
	if nodes == 0 {
		t.Error("no NATS node")
	}
}

// TestComposeAPITokensOptional: the stack starts without API_TOKENS, whose
// production clients live in Postgres.
func TestComposeAPITokensOptional(t *testing.T) {
	api := readCompose(t).Services["api"]
	raw, ok := api.Environment["API_TOKENS"]
	if !ok {
		return // not passed at all: optional too
	}
	got, err := interpolate(raw, secrets())
	if err != nil || got != "" {
		t.Errorf("API_TOKENS %q without API_TOKENS set: %q, %v; want optional and empty", raw, got, err)
	}
}

// TestComposeNATSCredentials: every service reaches NATS with a user and
// the password of the .env file, which it cannot do without; every node's
// configuration (nats.conf, read by nats-server itself) requires them from
// clients and routes alike; and a node started from it refuses a client
// without them.
func TestComposeNATSCredentials(t *testing.T) {
	c := readCompose(t)
	env := secrets()
	var clients int
	for name, s := range c.Services {
		raw, ok := s.Environment["NATS_URL"]
		if !ok {
			continue
		}
		clients++
		list, err := interpolate(raw, env)
		if err != nil {
			t.Fatalf("%s: NATS_URL: %v", name, err)
		}
		for _, u := range strings.Split(list, ",") {
			pu, err := url.Parse(strings.TrimSpace(u))
			if err != nil {
				t.Fatalf("%s: NATS_URL: %v", name, err)
			}
			if pass, _ := pu.User.Password(); pu.User.Username() != "stkgate" || pass != env["NATS_PASSWORD"] {
				t.Errorf("%s: NATS_URL %s does not carry stkgate and NATS_PASSWORD", name, pu.Redacted())
			}
		}
		without := secrets()
		delete(without, "NATS_PASSWORD")
		if _, err := interpolate(raw, without); err == nil {
			t.Errorf("%s: NATS_URL is made without NATS_PASSWORD", name)
		}
	}
	if clients < 5 {
		t.Errorf("%d services with a NATS_URL, want the api, projector, dispatcher, callback-ingest and webhooks", clients)
	}

	var nodes int
	for name, s := range c.Services {
		if !strings.HasPrefix(s.Image, "stkgate/nats-server") {
			continue
		}
		nodes++
		t.Run(name, func(t *testing.T) {
			opts := nodeOptions(t, c, name, s, env)
			if opts.Username != "stkgate" || opts.Password != env["NATS_PASSWORD"] || opts.NoAuthUser != "" {
				t.Errorf("clients: user %q, password set %v, no_auth_user %q; want stkgate and NATS_PASSWORD",
					opts.Username, opts.Password == env["NATS_PASSWORD"], opts.NoAuthUser)
			}
			if opts.Cluster.Username == "" || opts.Cluster.Password != env["NATS_CLUSTER_PASSWORD"] {
				t.Errorf("routes: no authorization from NATS_CLUSTER_PASSWORD")
			}
			if len(opts.Routes) != 3 {
				t.Errorf("%d routes, want 3", len(opts.Routes))
			}
			for _, r := range opts.Routes {
				if pass, _ := r.User.Password(); r.User.Username() != opts.Cluster.Username || pass != opts.Cluster.Password {
					t.Errorf("route %s does not carry the cluster's credentials", r.Redacted())
				}
			}
			if opts.ServerName != name || !opts.JetStream {
				t.Errorf("server_name %q, JetStream %v; want %s with JetStream", opts.ServerName, opts.JetStream, name)
			}
			refusesWithoutCredentials(t, opts, env["NATS_PASSWORD"])
		})
	}
	if nodes != 3 {
		t.Errorf("%d NATS nodes, want 3", nodes)
	}
}

// nodeOptions reads the node's configuration file as nats-server does, in
// the node's environment.
func nodeOptions(t *testing.T, c composeFile, name string, s composeService, env map[string]string) *server.Options {
	t.Helper()
	i := slices.Index(s.Command, "--config")
	if i < 0 || i+1 >= len(s.Command) {
		t.Fatalf("command %q names no --config", s.Command)
	}
	var file string
	for _, v := range s.Volumes {
		// A bind mount: ./file:/target[:ro].
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == s.Command[i+1] && strings.HasPrefix(parts[0], "./") {
			file = parts[0]
		}
	}
	if file == "" {
		t.Fatalf("no config file mounted at %s", s.Command[i+1])
	}
	for k, raw := range s.Environment {
		v, err := interpolate(raw, env)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return opts
}

// refusesWithoutCredentials starts a node from opts alone, on free local
// ports, and checks that a client needs the password.
func refusesWithoutCredentials(t *testing.T, opts *server.Options, password string) {
	t.Helper()
	o := *opts
	o.Host, o.Port = "127.0.0.1", -1
	o.Cluster = server.ClusterOpts{}
	o.Routes = nil
	o.StoreDir = t.TempDir()
	o.NoSigs, o.NoLog = true, true
	ns, err := server.NewServer(&o)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("node not ready")
	}
	addr := ns.Addr().String()
	if nc, err := nats.Connect("nats://"+addr, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Error("a client without credentials connected")
	}
	if nc, err := nats.Connect("nats://stkgate:wrong@"+addr, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Error("a client with a wrong password connected")
	}
	nc, err := nats.Connect("nats://stkgate:"+password+"@"+addr, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("the services' credentials: %v", err)
	}
	nc.Close()
}

// TestComposeMetricsNotPublished: each service serves its admin address
// (metrics, health) on the compose network, and no service publishes one
// to the host.
func TestComposeMetricsNotPublished(t *testing.T) {
	c := readCompose(t)
	for name, setting := range map[string]string{
		"api": "API_METRICS_ADDR", "projector": "PROJECTOR_METRICS_ADDR",
		"dispatcher": "DISPATCHER_METRICS_ADDR", "callback-ingest": "CALLBACK_METRICS_ADDR",
		"webhooks": "WEBHOOKS_METRICS_ADDR",
	} {
		s, ok := c.Services[name]
		if !ok {
			t.Fatalf("no %s service", name)
		}
		addr := s.Environment[setting]
		if !strings.HasPrefix(addr, ":") {
			t.Errorf("%s: %s = %q, want :<port> on the compose network", name, setting, addr)
		}
		for _, p := range s.Ports {
			if strings.HasSuffix(p, addr) {
				t.Errorf("%s publishes its admin address: %q", name, p)
			}
		}
	}
}
