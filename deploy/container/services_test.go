package container

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/stkgate/stkgate/events/kit/metrics"
)

// root is the repository's root, from this package's directory.
const root = "../.."

// TestMainsCallTheirReaders: each service's main calls exactly the readers
// Services runs for it (every ConfigFromEnv with os.Getenv, and
// metrics.AddrSetting of its admin address), under its name: a reader a
// main gains and Services lacks would let a deployment file set a variable
// no test knows the service reads.
func TestMainsCallTheirReaders(t *testing.T) {
	for _, s := range Services {
		t.Run(s.Name, func(t *testing.T) {
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, filepath.Join(root, s.Main, "main.go"), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			imports := map[string]string{} // local name → path
			for _, im := range f.Imports {
				path, _ := strconv.Unquote(im.Path.Value)
				name := filepath.Base(path)
				if im.Name != nil {
					name = im.Name.Name
				}
				imports[name] = path
			}
			var readers []string
			var settings, names []string
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pkg, ok := sel.X.(*ast.Ident)
				if !ok {
					return true
				}
				path := imports[pkg.Name]
				switch {
				case sel.Sel.Name == "ConfigFromEnv":
					readers = append(readers, path)
				case path == "github.com/stkgate/stkgate/events/kit/metrics" && sel.Sel.Name == "AddrSetting" && len(call.Args) > 1:
					settings = append(settings, literal(call.Args[1]))
				case path == "github.com/stkgate/stkgate/events/kit/service" && (sel.Sel.Name == "Main" || sel.Sel.Name == "MainLogs") && len(call.Args) > 0:
					names = append(names, literal(call.Args[0]))
				}
				return true
			})
			slices.Sort(readers)
			if want := slices.Sorted(maps.Keys(s.Readers)); !slices.Equal(readers, want) {
				t.Errorf("%s calls ConfigFromEnv of %q; Services runs %q", s.Main, readers, want)
			}
			if !slices.Equal(settings, []string{s.MetricsSetting}) {
				t.Errorf("%s reads its admin address from %q; Services says %s", s.Main, settings, s.MetricsSetting)
			}
			if !slices.Equal(names, []string{s.Name}) {
				t.Errorf("%s runs service.Main(%q); Services names it %s", s.Main, names, s.Name)
			}
		})
	}
}

func literal(e ast.Expr) string {
	if lit, ok := e.(*ast.BasicLit); ok {
		s, _ := strconv.Unquote(lit.Value)
		return s
	}
	return "<not a literal>"
}

// TestServicesReadTheirSettings: the recording reader sees what the
// services read (a few names each, by their documented names).
func TestServicesReadTheirSettings(t *testing.T) {
	for name, want := range map[string][]string{
		"api":             {"API_ADDR", "DATABASE_URL", "NATS_URL", "API_TOKENS", "API_METRICS_ADDR", "LOG_FORMAT", "OTEL_SERVICE_NAME"},
		"projector":       {"DATABASE_URL", "NATS_URL", "PROJECTOR_BATCH", "PROJECTOR_METRICS_ADDR"},
		"dispatcher":      {"NATS_URL", "DARAJA_CONSUMER_KEY", "CALLBACK_SECRET", "RECONCILE_AFTER", "DISPATCHER_METRICS_ADDR"},
		"callback-ingest": {"CALLBACK_ADDR", "CALLBACK_SECRET", "NATS_URL", "CALLBACK_CONFIRM", "CALLBACK_METRICS_ADDR"},
	} {
		s, ok := ServiceNamed(name)
		if !ok {
			t.Fatalf("no service %s", name)
		}
		asked, err := s.Read(nil)
		if err == nil {
			t.Errorf("%s starts with no settings at all", name)
		}
		for _, k := range want {
			if !asked[k] {
				t.Errorf("%s: %s not read", name, k)
			}
		}
		for _, k := range []string{"DARAJA_CONSUMER_KEY", "DATABASE_URL", "API_ADDR"} {
			if asked[k] && !slices.Contains(want, k) {
				t.Errorf("%s reads %s", name, k)
			}
		}
	}
}

// probe paths the deployment files may use, on a service's admin address.
const (
	readyPath = "/readyz"
	livePath  = "/healthz"
)

// TestAdminServesProbePaths: the admin handler every service runs answers
// the paths the files probe (a 404 would be a probe failing for ever).
func TestAdminServesProbePaths(t *testing.T) {
	reg := metrics.New("svc")
	reg.SetReadiness(metrics.Check{Name: "nats", Func: func(context.Context) error { return nil }})
	h := reg.AdminHandler()
	for _, p := range []string{readyPath, livePath} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", p, rec.Code)
		}
	}
}
