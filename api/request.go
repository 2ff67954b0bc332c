package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/stkgate/stkgate/events/kit/uniquekeys"
)

// Limits of a push request.
const (
	MinAmount       = 1
	MaxAmount       = 250000 // Daraja's per-transaction cap, in whole KES
	MaxReferenceLen = 12     // Daraja's AccountReference limit, in characters
	MaxTagLen       = 255
	MaxBodyBytes    = 64 << 10
)

// Request is a validated push request.
type Request struct {
	Phone     string // 254XXXXXXXXX
	Amount    int64  // whole KES, MinAmount..MaxAmount
	Reference string // 1..MaxReferenceLen characters, no control characters
	Tag       string // "" when none
	// CallbackURL is the request's own webhook URL, "" when none: only
	// its type is checked here; the handler checks the client's opt-in
	// and the URL (checkCallbackURL).
	CallbackURL string
}

// RequestError is a request the api refuses before anything happens: Status
// is 400 (not a JSON object or form), 413 (too large) or 422 (invalid
// fields, listed in Fields).
type RequestError struct {
	Status  int
	Message string
	Fields  FieldErrors
}

func (e *RequestError) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Message) }

func badRequest(format string, args ...any) *RequestError {
	return &RequestError{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}

// errTooLarge is the answer to a body over MaxBodyBytes.
var errTooLarge = &RequestError{
	Status:  http.StatusRequestEntityTooLarge,
	Message: "The request body must not be larger than 64 KiB.",
}

// FieldError is the messages of one invalid field.
type FieldError struct {
	Field    string
	Messages []string
}

// FieldErrors are the invalid fields of a request in the order of the
// request's fields (phone, amount, reference, tag, callback_url; a search's: its
// parameters, searchParams). It marshals as a JSON object in that order,
// as Laravel answered.
type FieldErrors []FieldError

// MarshalJSON writes {"field": ["message", …], …} in field order.
func (fe FieldErrors) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fe {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(f.Field)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(f.Messages)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// The fields of a request, in the order their errors are reported.
var fieldNames = [...]string{"phone", "amount", "reference", "tag", "callback_url"}

// kind is the JSON type of a field's value; form values are all strings.
type kind int

const (
	kindMissing kind = iota
	kindNull
	kindString
	kindNumber
	kindBool
	kindOther // object or array
)

// value is one field as the client sent it.
type value struct {
	kind kind
	// text is the string's content, or a number's literal.
	text string
	// badUTF8 marks a string that was not valid UTF-8.
	badUTF8 bool
}

// DecodeRequest parses and validates a push request body. contentType is
// the request's Content-Type: a form (application/x-www-form-urlencoded or
// multipart/form-data) is read as a form, anything else as JSON. A body
// sent as a form that is plainly JSON (its first character is '{') is read
// as JSON, since that is what the client meant (curl -d without -H does it).
// Every error is a *RequestError.
func DecodeRequest(contentType string, body []byte) (Request, error) {
	var (
		fields map[string]value
		err    error
	)
	mt, params, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "application/x-www-form-urlencoded" && !looksLikeJSON(body):
		fields, err = decodeForm(body)
	case mt == "multipart/form-data":
		fields, err = decodeMultipart(body, params["boundary"])
	default:
		fields, err = decodeJSON(body)
	}
	if err != nil {
		return Request{}, err
	}
	return validate(fields)
}

func looksLikeJSON(body []byte) bool {
	b := bytes.TrimLeft(body, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// MaxJSONDepth bounds how deeply a request body's objects and arrays may
// nest. A push request is one flat object; the room above it is for
// fields the api ignores.
const MaxJSONDepth = 32

// utf8BOM is the byte order mark some Windows clients put before JSON.
var utf8BOM = []byte("\xef\xbb\xbf")

// decodeJSON reads a JSON object's known fields. A key given twice,
// anywhere in the body, is refused: which amount the client meant would be
// a guess (encoding/json keeps the last, other parsers the first). Unknown
// fields are ignored; an empty body is an empty object, so that it gets the
// "required" messages.
func decodeJSON(body []byte) (map[string]value, error) {
	fields := map[string]value{}
	if len(bytes.TrimSpace(body)) == 0 {
		return fields, nil
	}
	if bytes.HasPrefix(body, utf8BOM) {
		return nil, badRequest("The request body must not start with a byte order mark.")
	}
	if err := uniquekeys.Check(body, MaxJSONDepth); err != nil {
		var (
			dup   *uniquekeys.DuplicateError
			depth *uniquekeys.DepthError
		)
		switch {
		case errors.As(err, &dup):
			return nil, badRequest("The request body has the %s field more than once.", dup.Path)
		case errors.As(err, &depth):
			return nil, badRequest("The request body must not nest objects or arrays more than %d levels deep.", depth.Max)
		}
		return nil, notJSON(err)
	}
	// Check has read the first value whole: it is well-formed, no key is
	// repeated, so one Unmarshal reads the object (the token walk it once
	// took cost as much again as Check). Unmarshal succeeds exactly when
	// the body is one value and whitespace; on its error, the Decoder's
	// walk (firstObject) says what is wrong, as it always has: a Decoder
	// for every body copied it into a buffer of its own.
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) == 0 || b[0] != '{' {
		return nil, badRequest("The request body must be a JSON object.")
	}
	var raws map[string]json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, firstObject(body, err)
	}
	for key, raw := range raws {
		if !known(key) {
			continue
		}
		v, err := jsonValue(raw)
		if err != nil {
			return nil, notJSON(err)
		}
		fields[key] = v
	}
	return fields, nil
}

// firstObject is the answer to body, a JSON object by its first byte,
// that json.Unmarshal refused with err: the first value's error, or, when
// the first value reads, what follows it.
func firstObject(body []byte, err error) *RequestError {
	dec := json.NewDecoder(bytes.NewReader(body))
	var raws map[string]json.RawMessage
	if derr := dec.Decode(&raws); derr != nil {
		return notJSON(derr)
	}
	if _, terr := dec.Token(); terr != io.EOF {
		return badRequest("The request body must be a single JSON object.")
	}
	return notJSON(err) // not reached: the Decoder found the body sound
}

// notJSON is the answer to a body that does not parse. The parser's own
// words (an offset, a character) help a client find its mistake and say
// nothing about the server.
func notJSON(err error) *RequestError {
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		return badRequest("The request body is not valid JSON: %s.", syn.Error())
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badRequest("The request body is not valid JSON: unexpected end of input.")
	default:
		return badRequest("The request body is not valid JSON.")
	}
}

func known(key string) bool {
	for _, f := range fieldNames {
		if key == f {
			return true
		}
	}
	return false
}

func jsonValue(raw json.RawMessage) (value, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return value{}, io.ErrUnexpectedEOF
	}
	switch c := raw[0]; {
	case c == '"':
		if s, ok := plainString(raw); ok {
			return value{kind: kindString, text: s}, nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return value{}, err
		}
		// encoding/json turns invalid UTF-8 and lone surrogates ("\ud800")
		// into U+FFFD silently; a reference shown to a customer should be
		// what the client meant.
		return value{kind: kindString, text: s, badUTF8: !utf8.Valid(raw) || replaced(raw, s)}, nil
	case c == 'n':
		return value{kind: kindNull}, nil
	case c == 't' || c == 'f':
		return value{kind: kindBool, text: string(raw)}, nil
	case c == '-' || (c >= '0' && c <= '9'):
		return value{kind: kindNumber, text: string(raw)}, nil
	default:
		return value{kind: kindOther}, nil
	}
}

// plainString is the JSON string raw (valid JSON, quotes included)
// without decoding it, when decoding would change nothing: no escape, and
// valid UTF-8 (encoding/json replaces what is not). Nor is it badUTF8.
// Every ordinary field of an ordinary request is one; Unmarshal made a
// decoder and scanned the string twice for each.
func plainString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[len(raw)-1] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	for _, b := range in {
		if b == '\\' || b == '"' || b < 0x20 {
			return "", false
		}
	}
	if !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}

// replaced reports whether decoding the JSON string raw into s made up a
// U+FFFD: s holds more of them than raw spelt out, literally or escaped.
func replaced(raw json.RawMessage, s string) bool {
	n := strings.Count(s, "\uFFFD")
	if n == 0 {
		return false
	}
	lower := bytes.ToLower(raw)
	return n > bytes.Count(raw, []byte("\uFFFD"))+bytes.Count(lower, []byte(`\ufffd`))
}

func decodeForm(body []byte) (map[string]value, error) {
	q, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, badRequest("The request body is not a valid form.")
	}
	return formFields(q)
}

func formFields(q url.Values) (map[string]value, error) {
	fields := map[string]value{}
	for _, f := range fieldNames {
		vs, ok := q[f]
		if !ok {
			continue
		}
		if len(vs) > 1 {
			return nil, badRequest("The request body has the %s field more than once.", f)
		}
		fields[f] = value{kind: kindString, text: vs[0], badUTF8: !utf8.ValidString(vs[0])}
	}
	return fields, nil
}

// decodeMultipart reads the text parts of a multipart/form-data body; file
// parts are ignored. The body is already bounded by MaxBodyBytes.
func decodeMultipart(body []byte, boundary string) (map[string]value, error) {
	if boundary == "" {
		return nil, badRequest("The request body is not a valid form: no multipart boundary.")
	}
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	q := url.Values{}
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, badRequest("The request body is not a valid form.")
		}
		name := p.FormName()
		if name == "" || p.FileName() != "" || !known(name) {
			continue
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, badRequest("The request body is not a valid form.")
		}
		q.Add(name, string(b))
	}
	return formFields(q)
}
