package container

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"
)

// The Kubernetes files, from this package's directory.
const (
	k8sBase    = "../k8s/base"
	k8sOverlay = "../k8s/overlays/production"
	natsValues = "../k8s/nats-values.yaml"
)

type kustomization struct {
	Namespace          string              `yaml:"namespace"`
	Resources          []string            `yaml:"resources"`
	Labels             []map[string]any    `yaml:"labels"`
	Images             []map[string]string `yaml:"images"`
	ConfigMapGenerator []generator         `yaml:"configMapGenerator"`
	SecretGenerator    []generator         `yaml:"secretGenerator"`
	Other              map[string]any      `yaml:",inline"`
}

type generator struct {
	Name     string         `yaml:"name"`
	Behavior string         `yaml:"behavior"`
	Literals []string       `yaml:"literals"`
	Envs     []string       `yaml:"envs"`
	Options  map[string]any `yaml:"options"`
	Other    map[string]any `yaml:",inline"`
}

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	node yaml.Node
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type container struct {
	Name    string `yaml:"name"`
	Image   string `yaml:"image"`
	Command []string
	Args    []string
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	EnvFrom []struct {
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
		SecretRef    *struct{ Name string } `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name      string  `yaml:"name"`
		Value     *string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef    *struct{ Name, Key string } `yaml:"secretKeyRef"`
			ConfigMapKeyRef *struct{ Name, Key string } `yaml:"configMapKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	StartupProbe   *probe `yaml:"startupProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
}

type deployment struct {
	Spec struct {
		Replicas int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
				SecurityContext              struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
					RunAsUser    int  `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Containers []container `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sService struct {
	Spec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Port       int `yaml:"port"`
			TargetPort any `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type pdb struct {
	Spec struct {
		MinAvailable   any `yaml:"minAvailable"`
		MaxUnavailable any `yaml:"maxUnavailable"`
		Selector       struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
	} `yaml:"spec"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// readKustomization reads dir's kustomization and refuses what this test
// does not model, so that an overlay growing a patch or a transformer
// fails here rather than being checked as if it were not there.
func readKustomization(t *testing.T, dir string) kustomization {
	t.Helper()
	var k kustomization
	readYAML(t, filepath.Join(dir, "kustomization.yaml"), &k)
	for key := range k.Other {
		if key != "apiVersion" && key != "kind" {
			t.Errorf("%s/kustomization.yaml: %s is not modelled by this test; teach it", dir, key)
		}
	}
	for _, g := range append(slices.Clone(k.ConfigMapGenerator), k.SecretGenerator...) {
		if len(g.Other) > 0 {
			t.Errorf("%s: generator %s: %v not modelled by this test", dir, g.Name, slices.Collect(maps.Keys(g.Other)))
		}
	}
	return k
}

// readObjects reads every document of the files.
func readObjects(t *testing.T, dir string, files []string) []k8sObject {
	t.Helper()
	var objs []k8sObject
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o k8sObject
			if err := dec.Decode(&o.node); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if err := o.node.Decode(&o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

func (o k8sObject) decode(t *testing.T, v any) {
	t.Helper()
	if err := o.node.Decode(v); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.Metadata.Name, err)
	}
}

// readEnvFile reads a kustomize env file: KEY=value lines, # comments.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=value", path, line)
		}
		m[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// k8sStack is the overlay as kustomize would build it, for what these
// tests check: the objects, and each generated ConfigMap's and Secret's
// data by name. A Secret's data comes from the .example beside its env
// file (the real one is never committed), every empty value filled from
// the test's .env (secrets()) or left empty, as an operator would fill it.
type k8sStack struct {
	objects    []k8sObject
	configMaps map[string]map[string]string
	secrets    map[string]map[string]string
}

func k8sSecrets() map[string]string {
	s := secrets()
	s["NATS_URL"] = "nats://stkgate:" + s["NATS_PASSWORD"] + "@nats.stkgate.svc:4222"
	s["DATABASE_URL"] = "postgres://stkgate:" + s["POSTGRES_PASSWORD"] + "@postgres:5432/stkgate?sslmode=verify-full"
	return s
}

func readK8s(t *testing.T) k8sStack {
	t.Helper()
	base := readKustomization(t, k8sBase)
	overlay := readKustomization(t, k8sOverlay)
	if !slices.Equal(overlay.Resources, []string{"../../base"}) {
		t.Fatalf("overlay resources %q: this test models ../../base alone", overlay.Resources)
	}
	st := k8sStack{
		objects:    readObjects(t, k8sBase, base.Resources),
		configMaps: map[string]map[string]string{},
		secrets:    map[string]map[string]string{},
	}
	fill := func(data map[string]string) {
		for k, v := range data {
			if v == "" {
				data[k] = k8sSecrets()[k]
			}
		}
	}
	gen := func(dir string, g generator) map[string]string {
		data := map[string]string{}
		for _, l := range g.Literals {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				t.Fatalf("%s: %s: literal %q is not KEY=value", dir, g.Name, l)
			}
			data[k] = v
		}
		for _, e := range g.Envs {
			maps.Copy(data, readEnvFile(t, filepath.Join(dir, e)))
		}
		return data
	}
	for _, g := range base.ConfigMapGenerator {
		st.configMaps[g.Name] = gen(k8sBase, g)
	}
	for _, g := range overlay.ConfigMapGenerator {
		data := gen(k8sOverlay, g)
		fill(data)
		switch g.Behavior {
		case "merge":
			if st.configMaps[g.Name] == nil {
				t.Fatalf("overlay merges into ConfigMap %s, which the base has not", g.Name)
			}
			maps.Copy(st.configMaps[g.Name], data)
		case "", "create":
			st.configMaps[g.Name] = data
		default:
			t.Fatalf("ConfigMap %s: behavior %s not modelled", g.Name, g.Behavior)
		}
	}
	for _, g := range overlay.SecretGenerator {
		var examples []string
		for _, e := range g.Envs {
			examples = append(examples, e+".example")
		}
		data := gen(k8sOverlay, generator{Name: g.Name, Envs: examples})
		fill(data)
		st.secrets[g.Name] = data
	}
	return st
}

// containerEnv is container c's environment as the kubelet makes it.
func (st k8sStack) containerEnv(t *testing.T, c container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := st.configMaps[ef.ConfigMapRef.Name]
			if !ok {
				t.Errorf("%s: envFrom ConfigMap %s, which no generator makes", c.Name, ef.ConfigMapRef.Name)
			}
			maps.Copy(env, cm)
		case ef.SecretRef != nil:
			t.Errorf("%s: envFrom Secret %s: every key of it would reach the service; give each key by secretKeyRef", c.Name, ef.SecretRef.Name)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.Value != nil:
			env[e.Name] = *e.Value
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := st.secrets[ref.Name][ref.Key]
			if !ok {
				t.Errorf("%s: %s from Secret %s key %s, which its env file does not have", c.Name, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			env[e.Name] = st.configMaps[ref.Name][ref.Key]
		default:
			t.Errorf("%s: %s has no value this test can read", c.Name, e.Name)
		}
	}
	return env
}

func (st k8sStack) find(kind, name string) (k8sObject, bool) {
	i := slices.IndexFunc(st.objects, func(o k8sObject) bool { return o.Kind == kind && o.Metadata.Name == name })
	if i < 0 {
		return k8sObject{}, false
	}
	return st.objects[i], true
}

// TestK8sSettingsAreTheServices: each service's Deployment gives it only
// variables it reads, and it starts on them; its secrets come key by key,
// each service only its own.
func TestK8sSettingsAreTheServices(t *testing.T) {
	st := readK8s(t)
	for _, svc := range Services {
		t.Run(svc.Name, func(t *testing.T) {
			o, ok := st.find("Deployment", svc.Name)
			if !ok {
				t.Fatalf("no Deployment %s", svc.Name)
			}
			var d deployment
			o.decode(t, &d)
			if n := len(d.Spec.Template.Spec.Containers); n != 1 {
				t.Fatalf("%d containers, want 1", n)
			}
			c := d.Spec.Template.Spec.Containers[0]
			env := st.containerEnv(t, c)
			asked, err := svc.Read(env)
			if err != nil {
				t.Errorf("%s would not start on its Deployment's environment:\n%v", svc.Name, err)
			}
			for k := range env {
				if !asked[k] && !strings.HasPrefix(k, ExporterPrefix) {
					t.Errorf("the Deployment sets %s for %s, which does not read it", k, svc.Name)
				}
			}
			if env["NATS_STREAM_REPLICAS"] != "3" {
				t.Errorf("NATS_STREAM_REPLICAS %q, want 3", env["NATS_STREAM_REPLICAS"])
			}
			if want := "stkgate/" + svc.Name; !strings.HasPrefix(c.Image, want+":") {
				t.Errorf("image %s, want %s:<tag>", c.Image, want)
			}
			if len(c.Command) > 0 || len(c.Args) > 0 {
				t.Errorf("command %q args %q: the image's entry point takes none", c.Command, c.Args)
			}
		})
	}
}

// TestK8sProbesPortsAndSafety: each Deployment's ports are the ones its
// settings make, its probes ask /readyz and /healthz on its admin port, it
// runs twice or more as a non-root user with a read-only root and no
// capabilities, within set resources, under a PodDisruptionBudget, and
// its Service (if it serves HTTP) targets its listen port.
func TestK8sProbesPortsAndSafety(t *testing.T) {
	st := readK8s(t)
	for _, svc := range Services {
		t.Run(svc.Name, func(t *testing.T) {
			o, ok := st.find("Deployment", svc.Name)
			if !ok {
				t.Fatalf("no Deployment %s", svc.Name)
			}
			var d deployment
			o.decode(t, &d)
			c := d.Spec.Template.Spec.Containers[0]
			env := st.containerEnv(t, c)
			ports := map[string]string{}
			for _, p := range c.Ports {
				ports[p.Name] = strconv.Itoa(p.ContainerPort)
			}
			if want := Port(env, svc.MetricsSetting, svc.MetricsDefault); ports["admin"] != want {
				t.Errorf("container port admin %q, want %s (%s)", ports["admin"], want, svc.MetricsSetting)
			}
			wantHTTP := ""
			if svc.ListenSetting != "" {
				wantHTTP = Port(env, svc.ListenSetting, svc.ListenDefault)
			}
			if ports["http"] != wantHTTP {
				t.Errorf("container port http %q, want %q", ports["http"], wantHTTP)
			}
			checkProbe(t, "readiness", c.ReadinessProbe, readyPath)
			checkProbe(t, "liveness", c.LivenessProbe, livePath)
			if c.StartupProbe != nil {
				checkProbe(t, "startup", c.StartupProbe, livePath)
			}

			spec := d.Spec.Template.Spec
			if d.Spec.Replicas < 2 {
				t.Errorf("%d replicas, want 2 or more", d.Spec.Replicas)
			}
			if !spec.SecurityContext.RunAsNonRoot || spec.SecurityContext.RunAsUser == 0 {
				t.Errorf("pod securityContext %+v: want runAsNonRoot and the image's user", spec.SecurityContext)
			}
			sc := c.SecurityContext
			if !sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
				t.Errorf("container securityContext %+v: want a read-only root, no privilege escalation, every capability dropped", sc)
			}
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Error("the pod mounts a service account token it never uses")
			}
			if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
				t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
			}
			labels := d.Spec.Template.Metadata.Labels
			if !selects(d.Spec.Selector.MatchLabels, labels) {
				t.Errorf("the Deployment's selector %v does not select its pods %v", d.Spec.Selector.MatchLabels, labels)
			}

			po, ok := st.find("PodDisruptionBudget", svc.Name)
			if !ok {
				t.Errorf("no PodDisruptionBudget %s", svc.Name)
			} else {
				var p pdb
				po.decode(t, &p)
				if !selects(p.Spec.Selector.MatchLabels, labels) {
					t.Errorf("PodDisruptionBudget selects %v, not the pods %v", p.Spec.Selector.MatchLabels, labels)
				}
				if n, ok := p.Spec.MinAvailable.(int); !ok || n < 1 || n >= d.Spec.Replicas {
					t.Errorf("PodDisruptionBudget minAvailable %v: want 1 to replicas-1 (%d)", p.Spec.MinAvailable, d.Spec.Replicas-1)
				}
			}

			so, ok := st.find("Service", svc.Name)
			if svc.ListenSetting == "" {
				if ok {
					t.Errorf("a Service for %s, which serves no HTTP of its own", svc.Name)
				}
				return
			}
			if !ok {
				t.Fatalf("no Service %s", svc.Name)
			}
			var s k8sService
			so.decode(t, &s)
			if !selects(s.Spec.Selector, labels) {
				t.Errorf("Service selects %v, not the pods %v", s.Spec.Selector, labels)
			}
			for _, p := range s.Spec.Ports {
				var target string
				switch tp := p.TargetPort.(type) {
				case string:
					target = ports[tp]
				case int:
					target = strconv.Itoa(tp)
				}
				if target != wantHTTP {
					t.Errorf("Service port %d targets %v (%q), want the listen port %s", p.Port, p.TargetPort, target, wantHTTP)
				}
			}
		})
	}
}

func checkProbe(t *testing.T, what string, p *probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("no %s probe (httpGet)", what)
		return
	}
	if p.HTTPGet.Path != path || p.HTTPGet.Port != "admin" {
		t.Errorf("%s probe GET %s on port %v, want %s on admin", what, p.HTTPGet.Path, p.HTTPGet.Port, path)
	}
}

// selects reports whether every label of sel is on labels (and sel has one).
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestK8sRateFitsDarajaBudget is TestComposeRateFitsDarajaBudget for the
// manifests.
func TestK8sRateFitsDarajaBudget(t *testing.T) {
	st := readK8s(t)
	envOf := func(name string) (map[string]string, int) {
		o, ok := st.find("Deployment", name)
		if !ok {
			t.Fatalf("no Deployment %s", name)
		}
		var d deployment
		o.decode(t, &d)
		return st.containerEnv(t, d.Spec.Template.Spec.Containers[0]), d.Spec.Replicas
	}
	num := func(env map[string]string, name string, def float64) float64 {
		if env[name] == "" {
			return def
		}
		f, err := strconv.ParseFloat(env[name], 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return f
	}
	apiEnv, apis := envOf("api")
	dEnv, dispatchers := envOf("dispatcher")
	rate := num(apiEnv, "API_RATE_LIMIT", 10) * float64(apis)
	budget := num(dEnv, "DARAJA_MAX_RPS", 20) * float64(dispatchers)
	if rate > budget/2 {
		t.Errorf("a client may ask %g/s across the api pods; the dispatchers call Daraja at %g/s: want at most half", rate, budget)
	}
}

// TestK8sSecretsNotCommitted: the Secrets' env files are ignored by git,
// and their .example files hold no value.
func TestK8sSecretsNotCommitted(t *testing.T) {
	overlay := readKustomization(t, k8sOverlay)
	ignore, err := os.ReadFile(filepath.Join(k8sOverlay, ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range overlay.SecretGenerator {
		for _, e := range g.Envs {
			if !slices.Contains(strings.Fields(string(ignore)), "/"+e) {
				t.Errorf("%s is not in the overlay's .gitignore", e)
			}
			for k, v := range readEnvFile(t, filepath.Join(k8sOverlay, e+".example")) {
				if v != "" {
					t.Errorf("%s.example: %s has a value; an example holds none, so none is deployed by mistake", e, k)
				}
			}
		}
	}
}

// natsChartValues is what these tests read of nats-values.yaml, the NATS
// chart's values.
type natsChartValues struct {
	FullnameOverride string `yaml:"fullnameOverride"`
	Config           struct {
		Cluster struct {
			Enabled  bool `yaml:"enabled"`
			Replicas int  `yaml:"replicas"`
			Merge    struct {
				Authorization map[string]string `yaml:"authorization"`
			} `yaml:"merge"`
			Patch []struct {
				Op    string   `yaml:"op"`
				Path  string   `yaml:"path"`
				Value []string `yaml:"value"`
			} `yaml:"patch"`
		} `yaml:"cluster"`
		JetStream struct {
			Enabled   bool `yaml:"enabled"`
			FileStore struct {
				Enabled bool   `yaml:"enabled"`
				Dir     string `yaml:"dir"`
				PVC     struct {
					Enabled bool   `yaml:"enabled"`
					Size    string `yaml:"size"`
				} `yaml:"pvc"`
			} `yaml:"fileStore"`
		} `yaml:"jetstream"`
		Merge struct {
			Authorization map[string]string `yaml:"authorization"`
		} `yaml:"merge"`
	} `yaml:"config"`
	Container struct {
		Image struct {
			Repository string `yaml:"repository"`
			Tag        string `yaml:"tag"`
		} `yaml:"image"`
		Env       map[string]yaml.Node `yaml:"env"`
		Resources map[string]any       `yaml:"resources"`
	} `yaml:"container"`
	PodDisruptionBudget struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"podDisruptionBudget"`
	NatsBox struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"natsBox"`
}

// chartVariable is the chart's way to write a NATS variable: << $NAME >>.
var chartVariable = regexp.MustCompile(`^<< \$([A-Z_][A-Z0-9_]*) >>$`)

// TestNATSChartValues: the Helm values make a three-node JetStream cluster
// (as many nodes as the services' NATS_STREAM_REPLICAS) of the release the
// tests run, on volumes, with clients and routes logging in with passwords
// each server reads from the Secret the overlay makes: every variable the
// configuration names is in the container's environment, each secret key
// in the Secret's env file, and one route per node.
func TestNATSChartValues(t *testing.T) {
	var v natsChartValues
	b, err := os.ReadFile(natsValues)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", natsValues, err)
	}
	st := readK8s(t)
	cfg := v.Config
	if want, _ := strconv.Atoi(st.configMaps["stkgate-common"]["NATS_STREAM_REPLICAS"]); !cfg.Cluster.Enabled || cfg.Cluster.Replicas != want {
		t.Errorf("cluster enabled %v with %d nodes; the services keep %d replicas", cfg.Cluster.Enabled, cfg.Cluster.Replicas, want)
	}
	js := cfg.JetStream
	if !js.Enabled || !js.FileStore.Enabled || !js.FileStore.PVC.Enabled || js.FileStore.PVC.Size == "" {
		t.Errorf("jetstream %+v: want JetStream on a file store on a volume", js)
	}
	if want := server.VERSION + "-alpine"; v.Container.Image.Repository != "nats" || v.Container.Image.Tag != want {
		t.Errorf("image %s:%s, want nats:%s (the embedded nats-server's version)", v.Container.Image.Repository, v.Container.Image.Tag, want)
	}
	if !v.PodDisruptionBudget.Enabled || v.NatsBox.Enabled || len(v.Container.Resources) == 0 {
		t.Errorf("podDisruptionBudget %v, natsBox %v, resources %v: want a budget, no nats-box (it has no password), resources",
			v.PodDisruptionBudget.Enabled, v.NatsBox.Enabled, v.Container.Resources)
	}

	// Every variable the configuration names, defined in the container's
	// environment, a secret one from stkgate-nats.
	env := map[string]string{} // name → its literal value, or "secret:<key>"
	for name, node := range v.Container.Env {
		var lit string
		if node.Decode(&lit) == nil {
			env[name] = lit
			continue
		}
		var ref struct {
			ValueFrom struct {
				SecretKeyRef struct{ Name, Key string } `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		}
		if err := node.Decode(&ref); err != nil || ref.ValueFrom.SecretKeyRef.Name == "" {
			t.Errorf("container.env %s: neither a value nor a secretKeyRef", name)
			continue
		}
		r := ref.ValueFrom.SecretKeyRef
		if _, ok := st.secrets[r.Name][r.Key]; !ok {
			t.Errorf("container.env %s: Secret %s key %s, which the overlay does not make", name, r.Name, r.Key)
		}
		env[name] = "secret:" + r.Key
	}
	variable := func(where, s string) string {
		m := chartVariable.FindStringSubmatch(s)
		if m == nil {
			t.Errorf("%s = %q: want a variable, << $NAME >>, never a password in the values", where, s)
			return ""
		}
		if _, ok := env[m[1]]; !ok {
			t.Errorf("%s names $%s, which container.env does not define", where, m[1])
		}
		return m[1]
	}
	if a := cfg.Merge.Authorization; a["user"] == "" || !strings.HasPrefix(env[variable("authorization.password", a["password"])], "secret:") {
		t.Errorf("clients' authorization %v: want a user and a password from the Secret", a)
	}
	ca := cfg.Cluster.Merge.Authorization
	if ca["user"] == "" || !strings.HasPrefix(env[variable("cluster.authorization.password", ca["password"])], "secret:") {
		t.Errorf("routes' authorization %v: want a user and a password from the Secret", ca)
	}
	var routes []string
	for _, p := range cfg.Cluster.Patch {
		if p.Op == "replace" && p.Path == "/routes" {
			routes = p.Value
		}
	}
	if len(routes) != cfg.Cluster.Replicas {
		t.Fatalf("%d routes, want one per node (%d)", len(routes), cfg.Cluster.Replicas)
	}
	for i, r := range routes {
		url := env[variable("route", r)]
		wantURL := "nats://" + ca["user"] + ":$(" + chartVariable.FindStringSubmatch(ca["password"])[1] + ")@" +
			v.FullnameOverride + "-" + strconv.Itoa(i) + "." + v.FullnameOverride + "-headless:6222"
		if url != wantURL {
			t.Errorf("route %d is %q, want %q (the route user, its password from the Secret, node %d)", i, url, wantURL, i)
		}
	}
}
