package events_test

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/stkgate/stkgate/events"
)

// asyncAPIURL is where the tests' schema compiler finds asyncapi.yaml.
const asyncAPIURL = "file:///stkgate/events/asyncapi.json"

// asyncAPI is asyncapi.yaml as JSON values (jsonschema.UnmarshalJSON's).
func asyncAPI(t *testing.T) map[string]any {
	t.Helper()
	y, err := os.ReadFile("asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := yaml.Unmarshal(y, &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return jsonValue(t, j).(map[string]any)
}

// jsonValue is b decoded as the schema compiler wants it (json.Number).
func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestAsyncAPIValid: asyncapi.yaml is a valid AsyncAPI 3.0.0 document, by
// the official JSON Schema (testdata/asyncapi/README.md says where it is
// from).
func TestAsyncAPIValid(t *testing.T) {
	f, err := os.Open("testdata/asyncapi/asyncapi-3.0.0.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	meta, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	const metaURL = "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
	c := jsonschema.NewCompiler()
	if err := c.AddResource(metaURL, meta); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(metaURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(asyncAPI(t)); err != nil {
		t.Fatalf("asyncapi.yaml is not valid AsyncAPI 3.0.0: %v", err)
	}
}

// payloadSchemas compiles the payload schema of every message of the
// document named as an event type (stk.…), by that type.
func payloadSchemas(t *testing.T, doc map[string]any) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7) // AsyncAPI's schema format is a superset of draft 7
	c.AssertFormat()
	if err := c.AddResource(asyncAPIURL, doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]*jsonschema.Schema{}
	for key, m := range at(doc, "components", "messages") {
		name, _ := m.(map[string]any)["name"].(string)
		if !strings.HasPrefix(name, "stk.") {
			continue
		}
		sch, err := c.Compile(asyncAPIURL + "#/components/messages/" + key + "/payload")
		if err != nil {
			t.Fatalf("message %s: %v", key, err)
		}
		out[name] = sch
	}
	return out
}

// at is the object at path in doc.
func at(doc map[string]any, path ...string) map[string]any {
	for _, p := range path {
		doc, _ = doc[p].(map[string]any)
	}
	return doc
}

// TestAsyncAPIGoldenEvents: every golden event file is valid by the schema
// of its type, and a payload the schema refuses is refused.
func TestAsyncAPIGoldenEvents(t *testing.T) {
	schemas := payloadSchemas(t, asyncAPI(t))
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v := jsonValue(t, b)
		typ, _ := v.(map[string]any)["type"].(string)
		sch := schemas[typ]
		if sch == nil {
			t.Errorf("%s: type %q has no message in asyncapi.yaml", f, typ)
			continue
		}
		seen[typ] = true
		if err := sch.Validate(v); err != nil {
			t.Errorf("%s is not valid by asyncapi.yaml: %v", f, err)
		}
		// The schema has teeth: the same event without its amount fails.
		delete(v.(map[string]any)["data"].(map[string]any), "amount")
		if sch.Validate(v) == nil {
			t.Errorf("%s without data.amount is valid by asyncapi.yaml", f)
		}
	}
	for typ := range schemas {
		if !seen[typ] {
			t.Errorf("no golden file in testdata for %s", typ)
		}
	}
}

// sources are package events' files, without its tests.
func sources(t *testing.T) []*ast.File {
	t.Helper()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// constants are the package's exported string constants, by name.
func constants(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range sources(t) {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i >= len(vs.Values) || !n.IsExported() {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						out[n.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
	}
	return out
}

// TestAsyncAPIMatchesPackage: the document and package events name the same
// subjects, streams, event types, unmatched reasons and payload fields.
func TestAsyncAPIMatchesPackage(t *testing.T) {
	doc := asyncAPI(t)
	consts := constants(t)
	pick := func(keep func(name string) bool) []string {
		var vs []string
		for n, v := range consts {
			if keep(n) {
				vs = append(vs, v)
			}
		}
		slices.Sort(vs)
		return vs
	}

	// Event types: every Type constant is a message, and every stk.
	// message a Type constant.
	var messages []string
	for _, m := range at(doc, "components", "messages") {
		if n, _ := m.(map[string]any)["name"].(string); strings.HasPrefix(n, "stk.") {
			messages = append(messages, n)
		}
	}
	slices.Sort(messages)
	types := pick(func(n string) bool { return strings.HasPrefix(n, "Type") })
	if diff := cmp.Diff(types, messages); diff != "" {
		t.Errorf("event types (-package +asyncapi.yaml):\n%s", diff)
	}

	// Subjects: every channel's address is what the package's subject
	// function makes of its parameters, and every such function has one.
	const id = "{tracking_id}"
	subjects := map[string]string{
		"CallbackSubjectReceived":  events.CallbackSubjectReceived(id),
		"CallbackSubjectUnmatched": events.CallbackSubjectUnmatched("{reason}"),
		"CallbackSubjectRefused":   events.CallbackSubjectRefused("{reason}", id),
		"CallbackSubjectConfirm":   events.CallbackSubjectConfirm(id),
		"PushLogSubject":           events.PushLogSubject(id),
		"DeadLetterSubject":        events.DeadLetterSubject("{consumer}", id),
		// AdvisorySubjects are JetStream's own: named in the description.
		"AdvisorySubjects": "",
		// PaymentSubjects filters the event channels above (stk.*.<id>):
		// a lookup's, not a channel of its own.
		"PaymentSubjects": "",
	}
	want := []string{}
	for _, typ := range types {
		want = append(want, events.Subject(typ, id))
	}
	for _, s := range subjects {
		if s != "" {
			want = append(want, s)
		}
	}
	slices.Sort(want)
	var got []string
	for _, c := range at(doc, "channels") {
		got = append(got, c.(map[string]any)["address"].(string))
	}
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("channel addresses (-package +asyncapi.yaml):\n%s", diff)
	}
	for _, fn := range subjectFuncs(t) {
		if _, ok := subjects[fn]; !ok && fn != "Subject" {
			t.Errorf("events.%s makes subjects: add its channel to asyncapi.yaml and to this test", fn)
		}
	}
	text, err := os.ReadFile("asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range events.AdvisorySubjects() {
		if !bytes.Contains(text, []byte(s)) {
			t.Errorf("asyncapi.yaml does not name the advisories %s", s)
		}
	}

	// Streams: each *StreamName with its *SubjectAll.
	wantStreams := map[string]any{
		events.StreamName:           []any{events.SubjectAll},
		events.CallbackStreamName:   []any{events.CallbackSubjectAll},
		events.PushLogStreamName:    []any{events.PushLogSubjectAll},
		events.DeadLetterStreamName: []any{events.DeadLetterSubjectAll},
	}
	gotStreams := map[string]any{}
	for name, s := range at(doc, "x-jetstream-streams") {
		gotStreams[name] = s.(map[string]any)["subjects"]
	}
	if diff := cmp.Diff(wantStreams, gotStreams); diff != "" {
		t.Errorf("streams (-package +asyncapi.yaml):\n%s", diff)
	}
	var listed []string
	for _, s := range wantStreams {
		listed = append(listed, s.([]any)[0].(string))
	}
	slices.Sort(listed)
	if diff := cmp.Diff(pick(func(n string) bool { return strings.HasSuffix(n, "SubjectAll") }), listed); diff != "" {
		t.Errorf("a SubjectAll constant is not in this test's streams (-package +test):\n%s", diff)
	}
	if !bytes.Contains(text, []byte(events.AdvisoryStreamName)) {
		t.Errorf("asyncapi.yaml does not name %s", events.AdvisoryStreamName)
	}

	// Unmatched reasons.
	var reasons []string
	for _, r := range at(doc, "components", "parameters", "unmatched_reason")["enum"].([]any) {
		reasons = append(reasons, r.(string))
	}
	slices.Sort(reasons)
	if diff := cmp.Diff(pick(func(n string) bool { return strings.HasPrefix(n, "Unmatched") }), reasons); diff != "" {
		t.Errorf("unmatched reasons (-package +asyncapi.yaml):\n%s", diff)
	}

	// Payloads: the fields of each event's Go type are its schema's
	// properties, those without omitempty/omitzero required.
	for typ, ev := range map[string]events.Event{
		"Requested": events.Requested{}, "Dispatched": events.Dispatched{},
		"Completed": events.Completed{}, "LateResult": events.LateResult{},
	} {
		wantProps, wantReq := jsonFields(reflect.TypeOf(ev))
		gotProps, gotReq := schemaFields(doc, at(doc, "components", "schemas", typ))
		if diff := cmp.Diff(wantProps, gotProps); diff != "" {
			t.Errorf("%s fields (-Go +asyncapi.yaml):\n%s", typ, diff)
		}
		if diff := cmp.Diff(wantReq, gotReq); diff != "" {
			t.Errorf("%s required fields (-Go +asyncapi.yaml):\n%s", typ, diff)
		}
	}
}

// subjectFuncs are the package's exported functions whose name says they
// make subjects.
func subjectFuncs(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, f := range sources(t) {
		for _, d := range f.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil && fn.Name.IsExported() && strings.Contains(fn.Name.Name, "Subject") {
				out = append(out, fn.Name.Name)
			}
		}
	}
	return out
}

// jsonFields are the JSON names of t's fields, embedded structs flattened,
// sorted, and those always written (no omitempty, no omitzero).
func jsonFields(t reflect.Type) (all, required []string) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			a, r := jsonFields(f.Type)
			all, required = append(all, a...), append(required, r...)
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		all = append(all, name)
		if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
			required = append(required, name)
		}
	}
	slices.Sort(all)
	slices.Sort(required)
	return all, required
}

// schemaFields are the properties and required properties of schema s,
// following $refs within doc and merging allOf.
func schemaFields(doc, s map[string]any) (all, required []string) {
	if ref, ok := s["$ref"].(string); ok {
		return schemaFields(doc, at(doc, strings.Split(strings.TrimPrefix(ref, "#/"), "/")...))
	}
	subs, _ := s["allOf"].([]any)
	for _, sub := range subs {
		a, r := schemaFields(doc, sub.(map[string]any))
		all, required = append(all, a...), append(required, r...)
	}
	for p := range at(s, "properties") {
		all = append(all, p)
	}
	if req, ok := s["required"].([]any); ok {
		for _, r := range req {
			required = append(required, r.(string))
		}
	}
	slices.Sort(all)
	slices.Sort(required)
	return all, required
}
