package openapitest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// bodiesDoc has what the services' documents use of OpenAPI 3.1 and JSON
// Schema 2020-12 for bodies: component schemas, responses and request
// bodies by $ref, type arrays with "null", enum, const, oneOf, a date-time
// format, additionalProperties: false, a form-encoded request body, a
// required request body and an optional one of any content type.
const bodiesDoc = `openapi: 3.1.0
info: {title: t, version: "1"}
security:
  - token: []
paths:
  /things:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/NewThing"}
          application/x-www-form-urlencoded:
            schema: {$ref: "#/components/schemas/ThingForm"}
      responses:
        "201":
          description: made
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Thing"}
        "400":
          $ref: "#/components/responses/Refused"
  /things/{id}:
    get:
      parameters:
        - {name: id, in: path, required: true, schema: {type: string}}
      responses:
        "200":
          description: the thing
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Thing"}
        "404":
          $ref: "#/components/responses/Refused"
        "431":
          description: Go's own answer
          content:
            text/plain:
              schema: {const: 431 Request Header Fields Too Large}
  /hooks:
    post:
      security: []
      requestBody: {$ref: "#/components/requestBodies/Anything"}
      responses:
        "200":
          description: taken
          content:
            application/json:
              schema:
                type: object
                required: [code]
                additionalProperties: false
                properties:
                  code: {enum: [0, 1]}
components:
  securitySchemes:
    token: {type: apiKey, in: header, name: X-Token}
  requestBodies:
    Anything:
      required: false
      content:
        "*/*": {}
  responses:
    Refused:
      description: refused
      content:
        application/json:
          schema: {$ref: "#/components/schemas/Failure"}
  schemas:
    NewThing:
      type: object
      required: [n]
      properties:
        n: {type: [integer, string], minimum: 1}
        tag: {type: [string, "null"]}
    ThingForm:
      type: object
      required: [n]
      properties:
        n: {type: string, pattern: "^[0-9]+$"}
        tag: {type: string}
    Thing:
      type: object
      required: [id, kind, tag, at]
      additionalProperties: false
      properties:
        id: {type: string}
        kind: {$ref: "#/components/schemas/Kind"}
        tag: {type: [string, "null"]}
        at: {type: string, format: date-time}
        note:
          oneOf:
            - type: "null"
            - {type: string, minLength: 1}
    Kind:
      enum: [small, big]
    Failure:
      type: object
      required: [success, message]
      additionalProperties: false
      properties:
        success: {const: false}
        message: {type: string, minLength: 1}
`

// thing is an answer that matches Thing; its variants below each break
// one rule.
const thing = `{"id":"a","kind":"small","tag":null,"at":"2024-03-21T11:30:01Z"}`

const (
	ctJSON = "application/json"
	ctForm = "application/x-www-form-urlencoded"
)

// TestCheckBodies pins what Check says of request and response bodies,
// whichever validator it uses: each case names the one rule it breaks.
func TestCheckBodies(t *testing.T) {
	d, err := Parse([]byte(bodiesDoc))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		method, path string
		ct, body     string // the request's Content-Type ("" none) and body
		noToken      bool
		status       int
		answerCT     string // the answer's Content-Type ("" none)
		answer       string
		wantErr      string // "" for a match
	}{
		// Response bodies.
		{name: "record", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON, answer: thing},
		{name: "record with charset", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON + "; charset=utf-8", answer: thing},
		{name: "record with a string tag and a note", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON,
			answer: `{"id":"a","kind":"big","tag":"x","at":"2024-03-21T11:30:01.5+03:00","note":"n"}`},
		{name: "record with a null note", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON,
			answer: `{"id":"a","kind":"big","tag":"x","at":"2024-03-21T11:30:01Z","note":null}`},
		{name: "wrong type", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON,
			answer: `{"id":1,"kind":"small","tag":null,"at":"2024-03-21T11:30:01Z"}`, wantErr: "answer 200"},
		{name: "required property missing", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON,
			answer: `{"id":"a","kind":"small","at":"2024-03-21T11:30:01Z"}`, wantErr: "answer 200"},
		{name: "enum value not allowed ($ref'd component)", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON,
			answer: `{"id":"a","kind":"huge","tag":null,"at":"2024-03-21T11:30:01Z"}`, wantErr: "answer 200"},
		{name: "type array refuses a number", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON,
			answer: `{"id":"a","kind":"small","tag":5,"at":"2024-03-21T11:30:01Z"}`, wantErr: "answer 200"},
		{name: "date-time not a date", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON,
			answer: `{"id":"a","kind":"small","tag":null,"at":"yesterday"}`, wantErr: "answer 200"},
		{name: "date-time no such day", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON,
			answer: `{"id":"a","kind":"small","tag":null,"at":"2024-02-30T11:30:01Z"}`, wantErr: "answer 200"},
		{name: "oneOf neither", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON,
			answer: `{"id":"a","kind":"small","tag":null,"at":"2024-03-21T11:30:01Z","note":""}`, wantErr: "answer 200"},
		{name: "additional property", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON,
			answer: `{"id":"a","kind":"small","tag":null,"at":"2024-03-21T11:30:01Z","x":1}`, wantErr: "answer 200"},
		{name: "not JSON", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON, answer: `{"id":`, wantErr: "answer 200"},
		{name: "empty answer", method: "GET", path: "/things/a", status: 200, answerCT: ctJSON, answer: ``, wantErr: "answer 200"},
		{name: "undocumented answer Content-Type", method: "GET", path: "/things/a", status: 200, answerCT: "text/html", answer: thing, wantErr: "Content-Type"},
		{name: "no answer Content-Type", method: "GET", path: "/things/a", status: 200, answer: thing, wantErr: "Content-Type"},
		{name: "undocumented status", method: "GET", path: "/things/a", status: 500, answerCT: ctJSON, answer: thing, wantErr: "status is not supported"},
		{name: "component response", method: "GET", path: "/things/a", status: 404, answerCT: ctJSON, answer: `{"success":false,"message":"no"}`},
		{name: "component response: const violated", method: "GET", path: "/things/a", status: 404, answerCT: ctJSON,
			answer: `{"success":true,"message":"no"}`, wantErr: "answer 404"},
		{name: "component response: minLength violated", method: "GET", path: "/things/a", status: 404, answerCT: ctJSON,
			answer: `{"success":false,"message":""}`, wantErr: "answer 404"},
		{name: "plain text const", method: "GET", path: "/things/a", status: 431, answerCT: "text/plain; charset=utf-8", answer: `431 Request Header Fields Too Large`},
		{name: "plain text const violated", method: "GET", path: "/things/a", status: 431, answerCT: "text/plain; charset=utf-8", answer: `too large`, wantErr: "answer 431"},
		{name: "inline schema enum", method: "POST", path: "/hooks", status: 200, answerCT: ctJSON, answer: `{"code":1}`},
		{name: "inline schema enum violated", method: "POST", path: "/hooks", status: 200, answerCT: ctJSON, answer: `{"code":2}`, wantErr: "answer 200"},

		// Request bodies: JSON.
		{name: "JSON request", method: "POST", path: "/things", ct: ctJSON, body: `{"n":1,"tag":null}`, status: 201, answerCT: ctJSON, answer: thing},
		{name: "JSON request, n a string", method: "POST", path: "/things", ct: ctJSON + "; charset=utf-8", body: `{"n":"1","tag":"t"}`, status: 201, answerCT: ctJSON, answer: thing},
		{name: "JSON request of the wrong type taken", method: "POST", path: "/things", ct: ctJSON, body: `{"n":true}`, status: 201, answerCT: ctJSON, answer: thing, wantErr: "request the document refuses"},
		{name: "JSON request below minimum taken", method: "POST", path: "/things", ct: ctJSON, body: `{"n":0}`, status: 201, answerCT: ctJSON, answer: thing, wantErr: "request the document refuses"},
		{name: "JSON request type array refuses a number", method: "POST", path: "/things", ct: ctJSON, body: `{"n":1,"tag":5}`, status: 201, answerCT: ctJSON, answer: thing, wantErr: "request the document refuses"},
		{name: "JSON request without a required property taken", method: "POST", path: "/things", ct: ctJSON, body: `{"tag":"t"}`, status: 201, answerCT: ctJSON, answer: thing, wantErr: "request the document refuses"},
		{name: "JSON request without a required property refused", method: "POST", path: "/things", ct: ctJSON, body: `{"tag":"t"}`, status: 400, answerCT: ctJSON, answer: `{"success":false,"message":"no"}`},
		{name: "not JSON taken", method: "POST", path: "/things", ct: ctJSON, body: `{"n":`, status: 201, answerCT: ctJSON, answer: thing, wantErr: "request the document refuses"},
		{name: "not JSON refused", method: "POST", path: "/things", ct: ctJSON, body: `{"n":`, status: 400, answerCT: ctJSON, answer: `{"success":false,"message":"no"}`},
		{name: "refusal that does not match", method: "POST", path: "/things", ct: ctJSON, body: `{"n":`, status: 400, answerCT: ctJSON, answer: `{"success":false}`, wantErr: "answer 400"},

		// Request bodies: forms, absent bodies, content types.
		{name: "form request", method: "POST", path: "/things", ct: ctForm, body: `n=12&tag=t`, status: 201, answerCT: ctJSON, answer: thing},
		{name: "form request breaking a pattern taken", method: "POST", path: "/things", ct: ctForm, body: `n=x`, status: 201, answerCT: ctJSON, answer: thing, wantErr: "request the document refuses"},
		{name: "form request without a required field taken", method: "POST", path: "/things", ct: ctForm, body: `tag=t`, status: 201, answerCT: ctJSON, answer: thing, wantErr: "request the document refuses"},
		{name: "form request breaking a pattern refused", method: "POST", path: "/things", ct: ctForm, body: `n=x`, status: 400, answerCT: ctJSON, answer: `{"success":false,"message":"no"}`},
		{name: "required body absent taken", method: "POST", path: "/things", ct: ctJSON, status: 201, answerCT: ctJSON, answer: thing, wantErr: "request the document refuses"},
		{name: "required body absent refused", method: "POST", path: "/things", ct: ctJSON, status: 400, answerCT: ctJSON, answer: `{"success":false,"message":"no"}`},
		{name: "undocumented request Content-Type taken", method: "POST", path: "/things", ct: "text/csv", body: `n\n1`, status: 201, answerCT: ctJSON, answer: thing, wantErr: "request the document refuses"},
		{name: "no request Content-Type taken", method: "POST", path: "/things", body: `{"n":1}`, status: 201, answerCT: ctJSON, answer: thing, wantErr: "request the document refuses"},
		{name: "no credentials taken", method: "POST", path: "/things", ct: ctJSON, body: `{"n":1}`, noToken: true, status: 201, answerCT: ctJSON, answer: thing, wantErr: "request the document refuses"},
		{name: "optional body of any type", method: "POST", path: "/hooks", ct: "text/csv", body: `{"n":`, status: 200, answerCT: ctJSON, answer: `{"code":0}`},
		{name: "optional body absent", method: "POST", path: "/hooks", status: 200, answerCT: ctJSON, answer: `{"code":0}`},
		{name: "optional body without Content-Type", method: "POST", path: "/hooks", body: `x`, status: 200, answerCT: ctJSON, answer: `{"code":0}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.ct != "" {
				r.Header.Set("Content-Type", tc.ct)
			}
			if !tc.noToken {
				r.Header.Set("X-Token", "t")
			}
			header := http.Header{}
			if tc.answerCT != "" {
				header.Set("Content-Type", tc.answerCT)
			}
			wantCheckErr(t, d.Check(r, []byte(tc.body), tc.status, header, []byte(tc.answer)), tc.wantErr)
		})
	}
}

// BenchmarkCheck is the exchanges a service's tests make most: a JSON
// request taken, and a record read.
func BenchmarkCheck(b *testing.B) {
	d, err := Parse([]byte(bodiesDoc))
	if err != nil {
		b.Fatal(err)
	}
	json := http.Header{"Content-Type": {ctJSON}}
	post := httptest.NewRequest("POST", "/things", nil)
	post.Header.Set("Content-Type", ctJSON)
	post.Header.Set("X-Token", "t")
	get := httptest.NewRequest("GET", "/things/a", nil)
	get.Header.Set("X-Token", "t")
	body, answer := []byte(`{"n":1,"tag":"t"}`), []byte(thing)
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Check(post, body, 201, json, answer); err != nil {
			b.Fatal(err)
		}
		if err := d.Check(get, nil, 200, json, answer); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCheckDoesNotCompile: checking a body costs a validation, not a
// compilation of its schema (kin-openapi's openapi3filter compiled each 3.1
// schema anew on every call: 487 allocations for this exchange, whose one
// schema is small, against 42 with the schema compiled by Parse). The
// exchange has no parameters and no headers, which openapi3filter still
// validates itself.
func TestCheckDoesNotCompile(t *testing.T) {
	d, err := Parse([]byte(bodiesDoc))
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", "/hooks", nil)
	r.Header.Set("Content-Type", ctJSON)
	header := http.Header{"Content-Type": {ctJSON}}
	body, answer := []byte(`{"n":1}`), []byte(`{"code":0}`)
	allocs := testing.AllocsPerRun(20, func() {
		if err := d.Check(r, body, 200, header, answer); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%.0f allocations a check", allocs)
	if allocs > 200 {
		t.Errorf("a check makes %.0f allocations, more than 200: is a schema compiled per call again?", allocs)
	}
}

// kin-openapi refuses a readOnly property in a request and a writeOnly one
// in an answer (for a 3.1 schema, when it falls back to its own
// validator); the bodies' JSON Schemas here do not, so a document that
// uses either is refused rather than checked less.
func TestParseRefusesReadOnlyAndWriteOnly(t *testing.T) {
	for _, kw := range []string{"readOnly", "writeOnly"} {
		doc := strings.Replace(bodiesDoc, "  schemas:\n", "  schemas:\n    Marked:\n      type: object\n      properties:\n        v: {type: string, "+kw+": true}\n", 1)
		if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), kw) {
			t.Errorf("%s: Parse error %v, want one naming %s", kw, err, kw)
		}
	}
	if _, err := Parse([]byte(bodiesDoc)); err != nil {
		t.Fatal(err)
	}
}
