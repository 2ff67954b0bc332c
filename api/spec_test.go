package api

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/stkgate/stkgate/events/testkit/openapitest"
)

// TestOpenAPIValid: the document is valid OpenAPI 3.1 (kin-openapi), and
// every exchange of the tests that use testEnv.do is checked against it.
func TestOpenAPIValid(t *testing.T) {
	if _, err := openapitest.Parse(OpenAPI); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(OpenAPI, []byte("openapi: 3.1.")) {
		t.Errorf("the document is not OpenAPI 3.1: %.20q", OpenAPI)
	}
}

// TestOpenAPIRoutes: the document has exactly the routes the api serves.
func TestOpenAPIRoutes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	param := regexp.MustCompile(`:([a-z_]+)`)
	var served []string
	for _, r := range e.h.e.Routes() {
		served = append(served, r.Method+" "+param.ReplaceAllString(r.Path, "{$1}"))
	}
	slices.Sort(served)
	if diff := cmp.Diff(openapitest.Load(t, OpenAPI).Operations(), served); diff != "" {
		t.Errorf("routes (-documented +served):\n%s", diff)
	}
}

// TestOpenAPIServed: /openapi.yaml is the document, /docs a page that
// renders it with the embedded Redoc bundle; none needs a token.
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	get := func(path string) (*http.Response, string) {
		t.Helper()
		rec := httptest.NewRecorder()
		e.srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		res := rec.Result()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, res.StatusCode, b)
		}
		return res, string(b)
	}
	if _, body := get("/openapi.yaml"); body != string(OpenAPI) {
		t.Error("/openapi.yaml is not the embedded document")
	}
	res, page := get("/docs")
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("/docs Content-Type = %q", ct)
	}
	for _, want := range []string{`spec-url="/openapi.yaml"`, `src="/docs/redoc.standalone.js"`} {
		if !strings.Contains(page, want) {
			t.Errorf("/docs lacks %s:\n%s", want, page)
		}
	}
	if _, js := get("/docs/redoc.standalone.js"); !strings.Contains(js, "Redocly") || len(js) < 1<<20 {
		t.Errorf("/docs/redoc.standalone.js is not Redoc's bundle (%d bytes)", len(js))
	}
}
