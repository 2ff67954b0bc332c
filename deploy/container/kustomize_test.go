package container

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestKustomizeRendersAsModelled: where kubectl is installed, the overlay
// built by kustomize itself (kubectl kustomize, on a copy with the Secrets'
// env files made from their examples) gives each Deployment the same
// environment as the model the other k8s tests check; without kubectl
// those tests stand on the model alone.
func TestKustomizeRendersAsModelled(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl: the overlay is checked through this package's model of kustomize only")
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../k8s")); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(dir, "overlays/production")
	for _, g := range readKustomization(t, k8sOverlay).SecretGenerator {
		for _, e := range g.Envs {
			b, err := os.ReadFile(filepath.Join(overlay, e+".example"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(overlay, e), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	out, err := exec.Command(kubectl, "kustomize", overlay).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("kubectl kustomize: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}

	configMaps := map[string]map[string]string{}
	secretKeys := map[string][]string{}
	deployments := map[string]deployment{}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o k8sObject
		if err := dec.Decode(&o.node); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		o.decode(t, &o)
		switch o.Kind {
		case "ConfigMap":
			var cm struct {
				Data map[string]string `yaml:"data"`
			}
			o.decode(t, &cm)
			configMaps[o.Metadata.Name] = cm.Data
		case "Secret":
			var s struct {
				Data map[string]string `yaml:"data"`
			}
			o.decode(t, &s)
			secretKeys[o.Metadata.Name] = slices.Sorted(maps.Keys(s.Data))
		case "Deployment":
			var d deployment
			o.decode(t, &d)
			deployments[o.Metadata.Name] = d
		}
	}

	st := readK8s(t)
	for _, svc := range Services {
		d, ok := deployments[svc.Name]
		if !ok {
			t.Errorf("kustomize renders no Deployment %s", svc.Name)
			continue
		}
		c := d.Spec.Template.Spec.Containers[0]
		rendered := map[string]string{}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil {
				cm, ok := configMaps[ef.ConfigMapRef.Name]
				if !ok {
					t.Errorf("%s: envFrom %s, which kustomize did not render", svc.Name, ef.ConfigMapRef.Name)
				}
				maps.Copy(rendered, cm)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				if !slices.Contains(secretKeys[ref.Name], ref.Key) {
					t.Errorf("%s: %s from Secret %s key %s, which kustomize did not render", svc.Name, e.Name, ref.Name, ref.Key)
				}
				rendered[e.Name] = "<secret>"
			}
		}
		modelled := st.containerEnv(t, findContainer(t, st, svc.Name))
		if got, want := slices.Sorted(maps.Keys(rendered)), slices.Sorted(maps.Keys(modelled)); !slices.Equal(got, want) {
			t.Errorf("%s: kustomize gives %q, the model %q", svc.Name, got, want)
		}
		for k, v := range rendered {
			if v != "<secret>" && modelled[k] != v && !(v == "" && modelled[k] != "") {
				t.Errorf("%s: %s is %q rendered, %q modelled", svc.Name, k, v, modelled[k])
			}
		}
	}
}

func findContainer(t *testing.T, st k8sStack, name string) container {
	t.Helper()
	o, ok := st.find("Deployment", name)
	if !ok {
		t.Fatalf("no Deployment %s", name)
	}
	var d deployment
	o.decode(t, &d)
	return d.Spec.Template.Spec.Containers[0]
}
