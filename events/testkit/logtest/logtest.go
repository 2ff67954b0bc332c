// Package logtest checks what a configuration shows when it is logged: each
// service logs its Config at start ("starting", "config", cfg), and the
// Config's LogValue decides what reaches the log. CheckConfig sets every
// exported field in turn to a distinctive value and renders the Config with
// slog's text and JSON handlers: a setting must show, a secret must not.
// A field added to a Config without a place in its LogValue (or in the
// test's list of what is not logged) fails the test, so that a new secret
// is never logged by accident and a new setting is never silently missing.
package logtest

import (
	"bytes"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Options says how the fields of a Config are logged. Paths name fields
// as Go does, nested structs with a dot and slice elements with [], e.g.
// "Daraja.PassKey" or "Tokens[].Token".
type Options struct {
	// Secrets are the fields whose values must never appear.
	Secrets []string
	// NotLogged are the fields LogValue leaves out on purpose (the logger,
	// clocks, knobs only tests set), with or without a reason after a
	// colon: "Logger: not a setting".
	NotLogged []string
	// Leaks are strings that must not appear when cfg itself (as given) is
	// logged: passwords inside URLs, for instance.
	Leaks []string
	// Shows are strings that must appear when cfg itself is logged.
	Shows []string
	// Values gives the value to set a field to, for a type CheckConfig
	// cannot make up one for (netip.Prefix, say). A non-secret field so set
	// must change the line; a secret's value, as fmt prints it, must not
	// appear.
	Values map[string]any
}

// CheckConfig fails t for every field of cfg (a struct implementing
// slog.LogValuer) that is logged though secret, or not logged though
// neither secret nor listed in NotLogged, and for every Leak that appears
// or Show that does not when cfg is logged.
func CheckConfig(t testing.TB, cfg slog.LogValuer, o Options) {
	t.Helper()
	root := reflect.ValueOf(cfg)
	if root.Kind() != reflect.Struct {
		t.Fatalf("logtest: %T is not a struct", cfg)
	}
	secret := set(o.Secrets)
	skip := map[string]bool{}
	for _, p := range o.NotLogged {
		name, _, _ := strings.Cut(p, ":")
		skip[strings.TrimSpace(name)] = true
	}
	seen := map[string]bool{}

	base := Render(cfg)
	for _, out := range base {
		for _, s := range o.Leaks {
			if strings.Contains(out, s) {
				t.Errorf("logging %T shows %q:\n%s", cfg, s, out)
			}
		}
		for _, s := range o.Shows {
			if !strings.Contains(out, s) {
				t.Errorf("logging %T does not show %q:\n%s", cfg, s, out)
			}
		}
	}

	for _, f := range leaves(root.Type(), "") {
		seen[f.path] = true
		if skip[f.path] {
			continue
		}
		v := reflect.New(root.Type()).Elem()
		v.Set(root)
		fv := f.get(v)
		var marker []string
		if val, given := o.Values[f.path]; given {
			fv.Set(reflect.ValueOf(val).Convert(f.typ))
			if secret[f.path] {
				marker = []string{fmt.Sprint(val)}
			}
		} else if m, ok := setScalar(fv, f.path); ok {
			marker = m
		} else {
			t.Errorf("logtest: %T.%s (%s) cannot be given a value to look for: give one in Values, or list it in NotLogged if LogValue leaves it out", cfg, f.path, f.typ)
			continue
		}
		for i, out := range Render(v.Interface().(slog.LogValuer)) {
			found := false
			for _, m := range marker {
				found = found || strings.Contains(out, m)
			}
			if len(marker) == 0 {
				// A bool, or a value given in Values, shows if the line
				// changes.
				found = out != base[i]
			}
			switch {
			case secret[f.path] && found:
				t.Errorf("logging %T shows the secret %s (%v):\n%s", cfg, f.path, fv, out)
			case !secret[f.path] && !found:
				t.Errorf("logging %T does not show %s (set to %v): add it to LogValue, masked if secret, or to the test's NotLogged:\n%s", cfg, f.path, fv, out)
			}
		}
	}
	for _, p := range append(append([]string{}, o.Secrets...), o.NotLogged...) {
		name, _, _ := strings.Cut(p, ":")
		if name = strings.TrimSpace(name); !seen[name] {
			t.Errorf("logtest: %T has no field %s", cfg, name)
		}
	}
}

// Render logs v as "starting config=v" through a text and a JSON handler
// and returns both lines.
func Render(v slog.LogValuer) []string {
	var text, js bytes.Buffer
	// Without the time, two renderings of one value are the same.
	opts := &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	slog.New(slog.NewTextHandler(&text, opts)).Info("starting", "config", v)
	slog.New(slog.NewJSONHandler(&js, opts)).Info("starting", "config", v)
	return []string{text.String(), js.String()}
}

func set(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}

type leaf struct {
	path string
	typ  reflect.Type
	// get returns the field within v (the root struct), making a slice of
	// one element on the way where the path goes through a slice.
	get func(v reflect.Value) reflect.Value
}

// leaves lists the exported fields of t, descending into structs and into
// the elements of slices of structs.
func leaves(t reflect.Type, prefix string) []leaf {
	var out []leaf
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		path := prefix + sf.Name
		idx := i
		field := func(v reflect.Value) reflect.Value { return v.Field(idx) }
		switch {
		case sf.Type.Kind() == reflect.Struct && hasExported(sf.Type):
			for _, l := range leaves(sf.Type, path+".") {
				inner := l.get
				out = append(out, leaf{path: l.path, typ: l.typ, get: func(v reflect.Value) reflect.Value { return inner(field(v)) }})
			}
		case sf.Type.Kind() == reflect.Slice && sf.Type.Elem().Kind() == reflect.Struct && hasExported(sf.Type.Elem()):
			for _, l := range leaves(sf.Type.Elem(), path+"[].") {
				inner, st := l.get, sf.Type
				out = append(out, leaf{path: l.path, typ: l.typ, get: func(v reflect.Value) reflect.Value {
					f := field(v)
					if f.Len() != 1 {
						f.Set(reflect.MakeSlice(st, 1, 1))
					}
					return inner(f.Index(0))
				}})
			}
		default:
			out = append(out, leaf{path: path, typ: sf.Type, get: field})
		}
	}
	return out
}

// hasExported says whether t has an exported field to set: a struct
// without one (time.Time, netip.Prefix) is a value of its own.
func hasExported(t reflect.Type) bool {
	for i := range t.NumField() {
		if t.Field(i).IsExported() {
			return true
		}
	}
	return false
}

var durationType = reflect.TypeFor[time.Duration]()

// setScalar gives f a value derived from its path and returns how it may
// be written: text and JSON handlers write durations differently.
func setScalar(f reflect.Value, path string) ([]string, bool) {
	switch {
	case f.Type() == durationType:
		d := 4242*time.Second + time.Duration(len(path))*time.Millisecond
		f.SetInt(int64(d))
		return []string{d.String(), strconv.FormatInt(int64(d), 10)}, true
	case f.Kind() == reflect.String:
		s := "zq7" + strings.ToLower(strings.NewReplacer(".", "", "[]", "").Replace(path)) + "x"
		f.SetString(s)
		return []string{s}, true
	case f.CanInt():
		n := 4200 + int64(len(path))
		f.SetInt(n)
		return []string{strconv.FormatInt(n, 10)}, true
	case f.CanUint():
		n := 4200 + uint64(len(path))
		f.SetUint(n)
		return []string{strconv.FormatUint(n, 10)}, true
	case f.CanFloat():
		x := 42.25 + float64(len(path))
		f.SetFloat(x)
		return []string{strconv.FormatFloat(x, 'g', -1, 64)}, true
	case f.Kind() == reflect.Bool:
		f.SetBool(!f.Bool())
		return nil, true // shown if the line changes
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
		s := "zq7" + strings.ToLower(strings.ReplaceAll(path, ".", "")) + "x"
		f.Set(reflect.ValueOf([]string{s}).Convert(f.Type()))
		return []string{s}, true
	}
	return nil, false
}
