package openapitest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const doc = `openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /things:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: {type: object, required: [n], properties: {n: {type: integer}}}
      responses:
        "201":
          description: made
          content:
            application/json:
              schema: {type: object, required: [id], additionalProperties: false, properties: {id: {type: string}}}
        "400":
          description: refused
          content:
            application/json:
              schema: {type: object, required: [message], properties: {message: {type: string}}}
        "429":
          description: slow down
          headers:
            Retry-After: {required: true, schema: {type: string}}
`

func TestCheck(t *testing.T) {
	d, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	json := http.Header{"Content-Type": {"application/json"}}
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		header                   http.Header
		answer                   string
		wantErr                  string // "" for a match
	}{
		{"documented", "POST", "/things", `{"n":1}`, 201, json, `{"id":"a"}`, ""},
		{"undocumented status", "POST", "/things", `{"n":1}`, 200, json, `{"id":"a"}`, "status is not supported"},
		{"wrong body", "POST", "/things", `{"n":1}`, 201, json, `{"id":1}`, "does not match"},
		{"extra field", "POST", "/things", `{"n":1}`, 201, json, `{"id":"a","x":1}`, "does not match"},
		{"invalid request refused", "POST", "/things", `{"n":"x"}`, 400, json, `{"message":"no"}`, ""},
		{"invalid request taken", "POST", "/things", `{"n":"x"}`, 201, json, `{"id":"a"}`, "request the document refuses"},
		{"missing header", "POST", "/things", `{"n":1}`, 429, nil, ``, "Retry-After"},
		{"unknown route 404", "GET", "/nope", ``, 404, json, `{}`, ""},
		{"unknown method 405", "DELETE", "/things", ``, 405, json, `{}`, ""},
		{"unknown route answered", "GET", "/nope", ``, 200, json, `{}`, "route the document does not have"},
		{"trailing slash 404", "POST", "/things/", `{"n":1}`, 404, json, `{}`, ""},
		{"trailing slash answered as its route", "POST", "/things/", `{"n":1}`, 201, json, `{"id":"a"}`, ""},
		{"trailing slash answered otherwise", "POST", "/things/", `{"n":1}`, 200, json, `{"id":"a"}`, "status is not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			r.Header.Set("Content-Type", "application/json")
			wantCheckErr(t, d.Check(r, []byte(tc.body), tc.status, tc.header, []byte(tc.answer)), tc.wantErr)
		})
	}
}

// wantCheckErr fails t unless err is nil for want "", or contains want.
func wantCheckErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected mismatch: %v", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("error = %v, want one containing %q", err, want)
	}
}

// TestHandlerPassesThrough: the wrapped handler's answer reaches the
// client unchanged, and so does the request's body.
func TestHandlerPassesThrough(t *testing.T) {
	d, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var got string
	h := d.Handler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = string(b)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"a"}`))
	}))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/things", strings.NewReader(`{"n":1}`))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	if got != `{"n":1}` || rec.Code != 201 || rec.Body.String() != `{"id":"a"}` {
		t.Errorf("handler read %q, answered %d %q", got, rec.Code, rec.Body.String())
	}
}
