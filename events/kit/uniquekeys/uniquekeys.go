// Package uniquekeys refuses JSON whose meaning depends on the parser: an
// object with the same key twice. encoding/json silently keeps the last of
// them, other parsers keep the first, so {"amount":1,"amount":250000} is
// two different payments depending on who reads it. A payment gateway
// refuses such a body instead of guessing.
//
// Check first reads the bytes once without allocating (plainlyValid), which
// settles an ordinary document; anything it cannot vouch for (a problem, an
// escaped key) it walks again by the tokens of a json.Decoder, whose errors
// are Check's. Both bound the nesting, so a hostile body costs at most two
// passes and a small stack.
// Keys are compared after unescaping ("\u0061mount" is "amount") and
// exactly, case included, as JSON defines them.
package uniquekeys

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// DuplicateError is an object with a key given more than once.
type DuplicateError struct {
	// Path leads from the document's root to the repeated key, written as
	// Body.stkCallback.ResultCode or items[2].name; a key that is not a
	// plain identifier is quoted (["a b"]) and cut to maxShownKey bytes.
	Path string
	// Plain reports that every key in Path is a plain identifier (a
	// letter, then letters, digits or '_'), so Path quotes none of the
	// sender's data (a phone number, say) and can go into any log.
	Plain bool
}

func (e *DuplicateError) Error() string { return "duplicate key " + e.Path }

// DepthError is a document nested deeper than the bound Check was given.
type DepthError struct {
	Max int
}

func (e *DepthError) Error() string {
	return fmt.Sprintf("nested more than %d levels deep", e.Max)
}

// maxShownKey bounds a key quoted in a Path: a key may be 64 KiB long.
const maxShownKey = 64

// Check reads the first JSON value of data and reports a *DuplicateError
// for the first object that repeats a key, a *DepthError when objects and
// arrays nest more than maxDepth deep, and a wrapped *json.SyntaxError (or
// io.ErrUnexpectedEOF) when the value is not JSON. What follows the first
// value is not looked at: whether trailing data is allowed is the caller's
// rule.
func Check(data []byte, maxDepth int) error {
	if plainlyValid(data, maxDepth) {
		return nil
	}
	return checkTokens(data, maxDepth)
}

// checkTokens is Check by json.Decoder's tokens: the word on every
// document plainlyValid cannot vouch for.
func checkTokens(data []byte, maxDepth int) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	// Numbers stay text: 1e400 is valid JSON, not a float64 error.
	dec.UseNumber()
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("uniquekeys: %w", err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if tok == json.Delim('}') {
				stack = stack[:len(stack)-1]
				if valueDone(stack) {
					return nil
				}
				continue
			}
			key, _ := tok.(string) // the decoder allows only a string here
			if _, dup := top.seen[key]; dup {
				top.key = key
				return duplicate(stack)
			}
			top.seen[key] = struct{}{}
			top.key, top.wantKey = key, false
			continue
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxDepth {
				return &DepthError{Max: maxDepth}
			}
			f := &frame{object: tok == json.Delim('{')}
			if f.object {
				f.seen, f.wantKey = map[string]struct{}{}, true
			}
			stack = append(stack, f)
			continue
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if valueDone(stack) {
			return nil
		}
	}
}

// frame is an object or array being read.
type frame struct {
	object  bool
	seen    map[string]struct{} // an object's keys so far
	wantKey bool                // an object's next token is a key (or its end)
	key     string              // the key whose value is being read
	index   int                 // an array's element being read
}

// valueDone moves the innermost container past a value just read, and
// reports whether that value was the whole document.
func valueDone(stack []*frame) bool {
	if len(stack) == 0 {
		return true
	}
	top := stack[len(stack)-1]
	if top.object {
		top.wantKey = true
	} else {
		top.index++
	}
	return false
}

func duplicate(stack []*frame) *DuplicateError {
	var b strings.Builder
	plain := true
	for _, f := range stack {
		if !f.object {
			b.WriteString("[" + strconv.Itoa(f.index) + "]")
			continue
		}
		if identifier(f.key) {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(f.key)
			continue
		}
		plain = false
		k := f.key
		if len(k) > maxShownKey {
			k = strings.ToValidUTF8(k[:maxShownKey], "") + "…"
		}
		b.WriteString("[" + strconv.Quote(k) + "]")
	}
	return &DuplicateError{Path: b.String(), Plain: plain}
}

// identifier reports whether key is a letter followed by letters, digits
// and underscores, all ASCII.
func identifier(key string) bool {
	if key == "" || len(key) > maxShownKey {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		letter := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
		if !letter && (i == 0 || c != '_' && (c < '0' || c > '9')) {
			return false
		}
	}
	return true
}

// plainlyValid reports that data's first value is an object or an array,
// valid JSON, nested at most maxDepth deep, whose objects each have at most
// maxPlainKeys keys, none of them escaped or outside ASCII, and none
// repeated. It reads the bytes once without allocating: json.Decoder's
// Token, which checkTokens walks, decodes every scalar through Decode and
// allocates a scanner error at the end of each (about a sixth of
// callback-ingest's allocations). false says only that it cannot tell: a
// problem, or a key it would have to unescape to compare; then
// checkTokens decides, so every error and its order stay the decoder's.
func plainlyValid(data []byte, maxDepth int) bool {
	s := plainScan{data: data, max: maxDepth}
	s.space()
	if s.i >= len(data) || data[s.i] != '{' && data[s.i] != '[' {
		return false
	}
	return s.value(0)
}

// maxPlainKeys bounds the keys of an object plainlyValid compares one by
// one; an object with more is left to checkTokens.
const maxPlainKeys = 32

type plainScan struct {
	data []byte
	i    int
	max  int
}

func (s *plainScan) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value reads one value inside depth containers.
func (s *plainScan) value(depth int) bool {
	if s.i >= len(s.data) {
		return false
	}
	switch s.data[s.i] {
	case '{':
		return s.object(depth + 1)
	case '[':
		return s.array(depth + 1)
	case '"':
		_, _, ok := s.str()
		return ok
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	}
	return s.number()
}

func (s *plainScan) object(depth int) bool {
	if depth > s.max {
		return false
	}
	s.i++
	s.space()
	if s.i < len(s.data) && s.data[s.i] == '}' {
		s.i++
		return true
	}
	var buf [maxPlainKeys][]byte
	keys := buf[:0]
	for {
		if s.i >= len(s.data) || s.data[s.i] != '"' || len(keys) == maxPlainKeys {
			return false
		}
		key, plain, ok := s.str()
		if !ok || !plain {
			return false
		}
		for _, k := range keys {
			if bytes.Equal(k, key) {
				return false
			}
		}
		keys = append(keys, key)
		s.space()
		if s.i >= len(s.data) || s.data[s.i] != ':' {
			return false
		}
		s.i++
		s.space()
		if !s.value(depth) {
			return false
		}
		if end, ok := s.after('}'); !ok || end {
			return ok
		}
	}
}

func (s *plainScan) array(depth int) bool {
	if depth > s.max {
		return false
	}
	s.i++
	s.space()
	if s.i < len(s.data) && s.data[s.i] == ']' {
		s.i++
		return true
	}
	for {
		if !s.value(depth) {
			return false
		}
		if end, ok := s.after(']'); !ok || end {
			return ok
		}
	}
}

// after reads what follows a member or an element: a comma, another to
// come, or close, the end (end). ok is false for anything else.
func (s *plainScan) after(close byte) (end, ok bool) {
	s.space()
	if s.i >= len(s.data) {
		return false, false
	}
	switch s.data[s.i] {
	case ',':
		s.i++
		s.space()
		return false, true
	case close:
		s.i++
		return true, true
	}
	return false, false
}

// str reads a string: its bytes between the quotes, and plain when they
// are its value as they stand (no escape, ASCII only).
func (s *plainScan) str() (text []byte, plain, ok bool) {
	s.i++
	start, plain := s.i, true
	for s.i < len(s.data) {
		c := s.data[s.i]
		switch {
		case c == '"':
			text = s.data[start:s.i]
			s.i++
			return text, plain, true
		case c < 0x20:
			return nil, false, false
		case c == '\\':
			plain = false
			if s.i+1 >= len(s.data) {
				return nil, false, false
			}
			switch s.data[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.data) {
					return nil, false, false
				}
				for _, h := range s.data[s.i+2 : s.i+6] {
					if !isHex(h) {
						return nil, false, false
					}
				}
				s.i += 6
			default:
				return nil, false, false
			}
		default:
			if c >= 0x80 {
				plain = false
			}
			s.i++
		}
	}
	return nil, false, false
}

func (s *plainScan) literal(word string) bool {
	if !bytes.HasPrefix(s.data[s.i:], []byte(word)) {
		return false
	}
	s.i += len(word)
	return true
}

// number reads -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; what may
// follow it is the container's to check.
func (s *plainScan) number() bool {
	d, i := s.data, s.i
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i >= len(d):
		return false
	case d[i] == '0':
		i++
	case d[i] >= '1' && d[i] <= '9':
		i = digits(d, i)
	default:
		return false
	}
	if i < len(d) && d[i] == '.' {
		j := digits(d, i+1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := digits(d, i)
		if j == i {
			return false
		}
		i = j
	}
	s.i = i
	return true
}

// digits is the index past the decimal digits of d from i.
func digits(d []byte, i int) int {
	for i < len(d) && d[i] >= '0' && d[i] <= '9' {
		i++
	}
	return i
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
