// Package uniquekeys refuses JSON whose meaning depends on the parser: an
// object with the same key twice. encoding/json silently keeps the last of
// them, other parsers keep the first, so {"amount":1,"amount":250000} is
// two different payments depending on who reads it. A payment gateway
// refuses such a body instead of guessing.
//
// Check walks the tokens of a document with a json.Decoder and a bound on
// its nesting, so a hostile body costs at most one pass and a small stack.
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
