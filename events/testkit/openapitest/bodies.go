package openapitest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Bodies are checked here, not by openapi3filter: for an OpenAPI 3.1
// document kin-openapi v0.153.0 validates every value with a JSON Schema
// 2020-12 validator it marshals and compiles anew for each call, which
// was most of the api tests' allocations. Here the whole document is one
// resource of a jsonschema compiler, and each body schema is compiled once,
// by its JSON pointer into the document, when the document is parsed.
// Decoding (JSON, forms…) stays kin-openapi's own registered decoders, and
// formats are asserted by kin-openapi's format validators, as it does: what
// a body must be is unchanged, only the work of saying so. Two differences,
// both refusals rather than checks left out: a body schema that does not
// compile makes Parse fail (kin-openapi falls back to its own validator),
// and so does a document with readOnly or writeOnly, which that fallback
// enforces (a readOnly property refused in a request, a writeOnly one in
// an answer) and JSON Schema does not; the services' documents use
// neither.
//
// Parameters and headers are still openapi3filter's (their schemas are
// small, and decoding them by style is kin-openapi's).

// docURL names the document as the compiler's one resource.
const docURL = "file:///openapi.json"

// bodySchemas compiles the schema of every body of doc, request and
// response, keyed by its media type: the *MediaType openapi3.Content.Get
// finds for an exchange's Content-Type.
func bodySchemas(doc *openapi3.T) (map[*openapi3.MediaType]*jsonschema.Schema, error) {
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("marshal the document as JSON: %w", err)
	}
	root, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("read the document's JSON: %w", err)
	}
	if kw := readWriteOnly(root); kw != "" {
		return nil, fmt.Errorf("the document uses %s, which openapitest does not check", kw)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	registerFormats(c, root)
	if err := c.AddResource(docURL, root); err != nil {
		return nil, fmt.Errorf("add the document to the JSON Schema compiler: %w", err)
	}

	schemas := map[*openapi3.MediaType]*jsonschema.Schema{}
	compileContent := func(at string, content openapi3.Content) error {
		for key, mt := range content {
			if mt == nil || mt.Schema == nil || schemas[mt] != nil {
				continue
			}
			loc := docURL + at + "/content/" + token(key) + "/schema"
			s, err := c.Compile(loc)
			if err != nil {
				return fmt.Errorf("compile the schema at %s: %w", loc, err)
			}
			schemas[mt] = s
		}
		return nil
	}
	for path, item := range doc.Paths.Map() {
		itemAt := "#/paths/" + token(path)
		if item.Ref != "" {
			return nil, fmt.Errorf("path %s is a $ref (%s), which openapitest does not follow", path, item.Ref)
		}
		for method, op := range item.Operations() {
			opAt := itemAt + "/" + strings.ToLower(method)
			if rb := op.RequestBody; rb != nil && rb.Value != nil {
				at, err := refOr(rb.Ref, opAt+"/requestBody")
				if err != nil {
					return nil, fmt.Errorf("%s %s: request body: %w", method, path, err)
				}
				if err := compileContent(at, rb.Value.Content); err != nil {
					return nil, fmt.Errorf("%s %s: request body: %w", method, path, err)
				}
			}
			if op.Responses == nil {
				continue
			}
			for status, resp := range op.Responses.Map() {
				if resp == nil || resp.Value == nil {
					continue
				}
				at, err := refOr(resp.Ref, opAt+"/responses/"+token(status))
				if err != nil {
					return nil, fmt.Errorf("%s %s: response %s: %w", method, path, status, err)
				}
				if err := compileContent(at, resp.Value.Content); err != nil {
					return nil, fmt.Errorf("%s %s: response %s: %w", method, path, status, err)
				}
			}
		}
	}
	return schemas, nil
}

// refOr is where an object that may be a $ref is in the document: at
// itself, or at its $ref's target (a local one: Parse refuses others).
func refOr(ref, at string) (string, error) {
	if ref == "" {
		return at, nil
	}
	if !strings.HasPrefix(ref, "#/") {
		return "", fmt.Errorf("$ref %q is not local to the document", ref)
	}
	return ref, nil
}

// token is s as one token of a JSON pointer in a URL's fragment.
func token(s string) string {
	s = strings.ReplaceAll(s, "~", "~0")
	s = strings.ReplaceAll(s, "/", "~1")
	return url.PathEscape(s)
}

// registerFormats makes c assert each format the document names with
// kin-openapi's validator of it, as kin-openapi's 2020-12 validation does
// (openapi3's registerFormatValidators): a format kin-openapi has no
// validator for (uuid, for one) is not checked at all, and one it has
// (date-time, date, byte, int32, int64…) is checked its way.
func registerFormats(c *jsonschema.Compiler, doc any) {
	formats := map[string]struct{}{}
	collectFormats(doc, formats)
	if len(formats) == 0 {
		return
	}
	for name := range formats {
		c.RegisterFormat(&jsonschema.Format{Name: name, Validate: formatValidator(name)})
	}
	c.AssertFormat()
}

// readWriteOnly is "readOnly" or "writeOnly" when a member of node so
// named is true, else "".
func readWriteOnly(node any) string {
	switch node := node.(type) {
	case map[string]any:
		for _, kw := range []string{"readOnly", "writeOnly"} {
			if node[kw] == true {
				return kw
			}
		}
		for _, v := range node {
			if kw := readWriteOnly(v); kw != "" {
				return kw
			}
		}
	case []any:
		for _, v := range node {
			if kw := readWriteOnly(v); kw != "" {
				return kw
			}
		}
	}
	return ""
}

// collectFormats adds to formats the value of every "format" member of
// node that is a string, as kin-openapi's collectFormats.
func collectFormats(node any, formats map[string]struct{}) {
	switch node := node.(type) {
	case map[string]any:
		if f, ok := node["format"].(string); ok && f != "" {
			formats[f] = struct{}{}
		}
		for _, v := range node {
			collectFormats(v, formats)
		}
	case []any:
		for _, v := range node {
			collectFormats(v, formats)
		}
	}
}

// formatValidator is kin-openapi's formatValidator without per-call
// settings (openapi3filter passes none): a string is checked by
// openapi3.SchemaStringFormats, a number by the integer formats when whole
// and the number formats otherwise; anything else passes.
func formatValidator(name string) func(any) error {
	return func(v any) error {
		switch v := v.(type) {
		case string:
			if f, ok := openapi3.SchemaStringFormats[name]; ok {
				return f.Validate(v)
			}
		case json.Number:
			if n, err := v.Float64(); err == nil {
				return numberFormat(name, n)
			}
		case float64:
			return numberFormat(name, v)
		case float32:
			return numberFormat(name, float64(v))
		case int:
			return numberFormat(name, float64(v))
		case int32:
			return numberFormat(name, float64(v))
		case int64:
			return numberFormat(name, float64(v))
		}
		return nil
	}
}

func numberFormat(name string, v float64) error {
	if v == math.Trunc(v) && !math.IsInf(v, 0) {
		if f, ok := openapi3.SchemaIntegerFormats[name]; ok {
			return f.Validate(int64(v))
		}
	}
	if f, ok := openapi3.SchemaNumberFormats[name]; ok {
		return f.Validate(v)
	}
	return nil
}

// errRequiredBody is a required request body that is empty or absent.
var errRequiredBody = errors.New("request body: " + openapi3filter.ErrInvalidRequired.Error())

// checkRequestBody is openapi3filter's ValidateRequestBody with the schema
// compiled once: an empty body is refused only when the document requires
// one; a body is refused when its Content-Type is not documented, when it
// does not decode as its media type, or when it does not match the schema.
func (d *Doc) checkRequestBody(rb *openapi3.RequestBody, header http.Header, body []byte) error {
	if len(body) == 0 {
		if rb.Required {
			return errRequiredBody
		}
		return nil
	}
	if len(rb.Content) == 0 {
		return nil
	}
	ct := header.Get("Content-Type")
	mt := rb.Content.Get(ct)
	if mt == nil {
		return fmt.Errorf("request body: Content-Type %q is not documented", ct)
	}
	if err := d.checkBody(mt, header, body); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

// checkResponseBody is the body half of openapi3filter's ValidateResponse,
// which Check has it skip: the answer's Content-Type must be documented for
// its status and its body decode as that media type and match the schema.
func (d *Doc) checkResponseBody(r *http.Request, resps *openapi3.Responses, status int, header http.Header, body []byte) error {
	// What openapi3filter never checks, it does not check either.
	if r.Method == http.MethodHead {
		return nil
	}
	switch status {
	case http.StatusNotModified, http.StatusPermanentRedirect,
		http.StatusTemporaryRedirect, http.StatusMovedPermanently:
		return nil
	}
	if resps == nil {
		return nil
	}
	ref := resps.Status(status)
	if ref == nil {
		ref = resps.Default()
	}
	if ref == nil || ref.Value == nil || len(ref.Value.Content) == 0 {
		return nil // an undocumented status is openapi3filter's to refuse
	}
	ct := header.Get("Content-Type")
	mt := ref.Value.Content.Get(ct)
	if mt == nil {
		return fmt.Errorf("response Content-Type %q is not documented", ct)
	}
	if err := d.checkBody(mt, header, body); err != nil {
		return fmt.Errorf("response body: %w", err)
	}
	return nil
}

// checkBody decodes body as openapi3filter does (its decodeBody, with the
// decoders registered in openapi3filter) and validates it with the
// schema compiled for mt.
func (d *Doc) checkBody(mt *openapi3.MediaType, header http.Header, body []byte) error {
	if mt.Schema == nil {
		return nil // no schema: any body
	}
	schema := d.bodies[mt]
	if schema == nil {
		// Every media type of the document was compiled by Parse.
		return errors.New("openapitest: a media type of the document has no compiled schema")
	}
	value, err := decodeBody(body, header, mt)
	if err != nil {
		return fmt.Errorf("does not decode: %w", err)
	}
	if err := schema.Validate(value); err != nil {
		return fmt.Errorf("does not match its schema: %w", err)
	}
	return nil
}

// decodeBody is openapi3filter's decodeBody (unexported) for a whole body:
// the media type of the Content-Type, lowercased, picks the registered
// decoder, "+json" types falling back to JSON's; a binary schema, or a
// contentMediaType without decoder, is read as a file.
func decodeBody(body []byte, header http.Header, mt *openapi3.MediaType) (any, error) {
	mediaType, _, _ := strings.Cut(header.Get("Content-Type"), ";")
	mediaType = strings.ToLower(strings.TrimSpace(mediaType))
	encFn := func(name string) *openapi3.Encoding { return mt.Encoding[name] }
	enc := mt.Encoding[""]
	binary := mt.Schema.Value != nil && mt.Schema.Value.Type.Is("string") && mt.Schema.Value.Format == "binary"
	if binary && (enc == nil || enc.ContentType == "") {
		return openapi3filter.FileBodyDecoder(bytes.NewReader(body), header, mt.Schema, encFn)
	}
	if !enc.AllowsContentType(mediaType) {
		return nil, fmt.Errorf("Content-Type %q is not the encoding's %q", mediaType, enc.ContentType)
	}
	decoder := openapi3filter.RegisteredBodyDecoder(mediaType)
	if decoder == nil && strings.HasSuffix(mediaType, "+json") && !binary {
		decoder = openapi3filter.RegisteredBodyDecoder("application/json")
	}
	if decoder == nil {
		decoder = openapi3filter.RegisteredBodyDecoder("*/*")
	}
	if decoder == nil {
		if binary || (mt.Schema.Value != nil && mt.Schema.Value.ContentMediaType != "") {
			return openapi3filter.FileBodyDecoder(bytes.NewReader(body), header, mt.Schema, encFn)
		}
		return nil, fmt.Errorf("no decoder for Content-Type %q", mediaType)
	}
	return decoder(bytes.NewReader(body), header, mt.Schema, encFn)
}
