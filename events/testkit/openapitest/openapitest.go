// Package openapitest checks HTTP exchanges against an OpenAPI document, so
// that a service and its document cannot drift apart: wrap the handler a
// test serves (Handler) or the transport its client uses (Transport), and
// every request and answer is checked: routes, parameters, headers,
// security and statuses by kin-openapi's openapi3filter, bodies by the
// document's JSON Schemas, each compiled once when the document is parsed
// (see bodySchemas), with openapi3filter's decoders and kin-openapi's
// formats.
//
// An exchange fails the test when:
//   - the answer's status is not documented for its route (no "default"
//     answers are written, so every status must be listed), or its headers
//     or body do not match what the document says of that status;
//   - the request does not match the document and yet was answered with
//     less than a 4xx: the service took what its document says it refuses;
//   - the route or method is not in the document and the answer is neither
//     404 nor 405.
//
// A request the document calls invalid (tests send hostile ones on
// purpose) is otherwise fine: its refusal is checked like any answer.
package openapitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Doc is a loaded, valid OpenAPI document.
type Doc struct {
	doc    *openapi3.T
	router routers.Router
	bodies map[*openapi3.MediaType]*jsonschema.Schema // see bodySchemas
}

// Parse loads data, an OpenAPI 3 document in YAML or JSON, and validates
// it. Its servers are dropped: routes match by path, whatever the host a
// test serves on.
func Parse(data []byte) (*Doc, error) {
	loader := openapi3.NewLoader() // external $refs stay refused
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load the OpenAPI document: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is invalid: %w", err)
	}
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route the OpenAPI document: %w", err)
	}
	bodies, err := bodySchemas(doc)
	if err != nil {
		return nil, fmt.Errorf("compile the OpenAPI document's body schemas: %w", err)
	}
	return &Doc{doc: doc, router: router, bodies: bodies}, nil
}

var parsed sync.Map // string(data) → *Doc

// Load is Parse for a test, of a document parsed once per process.
func Load(t testing.TB, data []byte) *Doc {
	t.Helper()
	if d, ok := parsed.Load(string(data)); ok {
		return d.(*Doc)
	}
	d, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	parsed.Store(string(data), d)
	return d
}

// maxChecked bounds the request body read for checking; a larger one (a
// test's endless body) is passed on unchecked.
const maxChecked = 1 << 20

// Handler wraps h: every request it serves and its answer are checked, and
// a mismatch fails t.
func (d *Doc) Handler(t testing.TB, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, whole := readBody(&r.Body)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if whole {
			if err := d.Check(r, body, rec.Code, rec.Header(), rec.Body.Bytes()); err != nil {
				t.Errorf("openapitest: %s %s: %v", r.Method, r.URL.Path, err)
			}
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// Transport wraps rt (nil: http.DefaultTransport): every request sent
// through it and its answer are checked, and a mismatch fails t.
func (d *Doc) Transport(t testing.TB, rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		var (
			body  []byte
			whole = true
		)
		if r.Body != nil {
			r = r.Clone(r.Context())
			body, whole = readBody(&r.Body)
		}
		resp, err := rt.RoundTrip(r)
		if err != nil || !whole {
			return resp, err
		}
		answer, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(answer))
		if err != nil {
			return resp, nil // the caller meets the same error reading it
		}
		if err := d.Check(r, body, resp.StatusCode, resp.Header, answer); err != nil {
			t.Errorf("openapitest: %s %s: %v", r.Method, r.URL.Path, err)
		}
		return resp, nil
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// readBody reads up to maxChecked of *rc and puts back a body that reads
// the same; whole is false when there was more.
func readBody(rc *io.ReadCloser) (body []byte, whole bool) {
	if *rc == nil || *rc == http.NoBody {
		return nil, true
	}
	orig := *rc
	body, err := io.ReadAll(io.LimitReader(orig, maxChecked+1))
	whole = err == nil && len(body) <= maxChecked
	*rc = readCloser{io.MultiReader(bytes.NewReader(body), orig), orig}
	if whole {
		body = bytes.Clone(body)
	}
	return body, whole
}

type readCloser struct {
	io.Reader
	io.Closer
}

// Check checks one exchange: r with its body, and the answer's status,
// header and body. It returns what does not match the document.
func (d *Doc) Check(r *http.Request, body []byte, status int, header http.Header, answer []byte) error {
	req := r.Clone(context.Background())
	req.Body = io.NopCloser(bytes.NewReader(body))
	if _, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err != nil {
		// A Content-Type nobody can read says nothing of the body: it is
		// checked as one without (kin-openapi would refuse the header
		// itself, which no document can allow).
		req.Header.Del("Content-Type")
	}
	route, params, err := d.router.FindRoute(req)
	if err == nil && (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) &&
		strings.HasSuffix(req.URL.Path, "/") && !strings.HasSuffix(route.Path, "/") {
		// The router takes /p/ for /p, which the document has; a server
		// that does not is right to answer 404 (a server that answers it,
		// a catch-all's, is checked against /p).
		return nil
	}
	if err != nil {
		if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
			return nil
		}
		return fmt.Errorf("answered %d to a route the document does not have (%w)", status, err)
	}
	in := &openapi3filter.RequestValidationInput{
		Request:    req,
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			AuthenticationFunc:  credentialsPresent,
			SkipSettingDefaults: true,
			ExcludeRequestBody:  true, // checkRequestBody's
		},
	}
	// Whether the document allows the request matters only for an answer
	// that accepts it: a 4xx or 5xx may answer anything. (Validating the
	// hostile bodies the tests send anyway cost a fifth of the api tests'
	// CPU, most of it kin-openapi formatting the refusals.)
	var reqErr error
	if status < 400 {
		reqErr = openapi3filter.ValidateRequest(context.Background(), in)
		if rb := route.Operation.RequestBody; reqErr == nil && rb != nil && rb.Value != nil {
			reqErr = d.checkRequestBody(rb.Value, req.Header, body)
		}
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 status,
		Header:                 header,
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			ExcludeResponseBody:   true, // checkResponseBody's
		},
	}
	out.SetBodyBytes(answer)
	err = openapi3filter.ValidateResponse(context.Background(), out)
	if err == nil {
		err = d.checkResponseBody(req, route.Operation.Responses, status, header, answer)
	}
	if err != nil {
		return fmt.Errorf("answer %d (%s) does not match the document: %w", status, short(answer), err)
	}
	if reqErr != nil && status < 400 {
		return fmt.Errorf("answered %d to a request the document refuses: %w", status, reqErr)
	}
	return nil
}

// credentialsPresent holds an apiKey scheme met when its header, query
// parameter or cookie is there; whether the credentials are good is the
// service's to say (401).
func credentialsPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	s, r := in.SecurityScheme, in.RequestValidationInput.Request
	if s.Type != "apiKey" {
		return nil
	}
	var present bool
	switch s.In {
	case "header":
		present = r.Header.Get(s.Name) != ""
	case "query":
		present = r.URL.Query().Has(s.Name)
	case "cookie":
		_, err := r.Cookie(s.Name)
		present = err == nil
	}
	if !present {
		return errors.New("no " + s.Name)
	}
	return nil
}

// short is an answer's body, cut for an error message.
func short(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// Operations are the document's operations, each as "METHOD /path" with
// its path parameters in braces, sorted: a test compares them with the
// routes a service serves.
func (d *Doc) Operations() []string {
	var ops []string
	for path, item := range d.doc.Paths.Map() {
		for method := range item.Operations() {
			ops = append(ops, method+" "+path)
		}
	}
	slices.Sort(ops)
	return ops
}
