package uniquekeys

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	tests := []struct {
		name, in string
		dup      string // the Path of the *DuplicateError expected
		plain    bool
		depth    bool // a *DepthError expected
		syntax   bool // a syntax error expected
	}{
		{name: "object", in: `{"phone":"0712345678","amount":1,"reference":"R"}`},
		{name: "same key in sibling objects", in: `{"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":2}]}`},
		{name: "same key at two levels", in: `{"k":{"k":{"k":1}}}`},
		{name: "keys differing in case", in: `{"amount":1,"Amount":2}`},
		{name: "scalar", in: `1e400`},
		{name: "empty containers", in: `{"a":{},"b":[],"c":[[],{}]}`},
		{name: "trailing data is the caller's business", in: `{"a":1} {"a":1,"a":2}`},
		{name: "top level", in: `{"amount":1,"amount":250000}`, dup: "amount", plain: true},
		{name: "after other keys", in: `{"a":1,"b":2,"c":3,"b":4}`, dup: "b", plain: true},
		{name: "escaped spelling", in: `{"amount":1,"\u0061mount":2}`, dup: "amount", plain: true},
		{name: "null and value", in: `{"amount":null,"amount":5}`, dup: "amount", plain: true},
		{name: "nested in a callback", in: `{"Body":{"stkCallback":{"ResultCode":1032,"ResultDesc":"x","ResultCode":0}}}`,
			dup: "Body.stkCallback.ResultCode", plain: true},
		{name: "in an array element", in: `{"Item":[{"Name":"A"},{"Name":"Amount","Value":1,"Value":2}]}`,
			dup: "Item[1].Value", plain: true},
		{name: "array of arrays", in: `[[1],[2,{"x":1,"x":1}]]`, dup: "[1][1].x", plain: true},
		{name: "empty key", in: `{"":1,"":2}`, dup: `[""]`},
		{name: "digits key is quoted", in: `{"254712345678":1,"254712345678":2}`, dup: `["254712345678"]`},
		{name: "control characters quoted", in: `{"a\u0000b":1,"a\u0000b":2}`, dup: `["a\x00b"]`},
		{name: "unicode key", in: `{"ref":{"\u202eevil":1,"\u202eevil":2}}`, dup: `ref["\u202eevil"]`},
		{name: "long key cut", in: `{"` + strings.Repeat("k", 100) + `":1,"` + strings.Repeat("k", 100) + `":2}`,
			dup: `["` + strings.Repeat("k", 64) + `…"]`},
		{name: "at the depth bound", in: deep(32)},
		{name: "over the depth bound", in: deep(33), depth: true},
		{name: "10k deep", in: deep(10000), depth: true},
		{name: "10k deep objects", in: strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000), depth: true},
		{name: "deep and unclosed", in: strings.Repeat("[", 100000), depth: true},
		{name: "empty", in: ``, syntax: true},
		{name: "truncated", in: `{"a":`, syntax: true},
		{name: "garbage", in: `phone=1`, syntax: true},
		{name: "trailing comma", in: `{"a":1,}`, syntax: true},
		{name: "key not a string", in: `{1:2}`, syntax: true},
		{name: "byte order mark", in: "\xef\xbb\xbf{}", syntax: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check([]byte(tt.in), 32)
			var (
				dup   *DuplicateError
				depth *DepthError
			)
			switch {
			case tt.dup != "":
				if !errors.As(err, &dup) || dup.Path != tt.dup || dup.Plain != tt.plain {
					t.Fatalf("Check = %#v; want duplicate %s (plain %v)", err, tt.dup, tt.plain)
				}
				if want := "duplicate key " + tt.dup; err.Error() != want {
					t.Errorf("message %q, want %q", err, want)
				}
			case tt.depth:
				if !errors.As(err, &depth) || depth.Max != 32 || err.Error() != "nested more than 32 levels deep" {
					t.Fatalf("Check = %v; want a *DepthError", err)
				}
			case tt.syntax:
				var syn *json.SyntaxError
				if err == nil || errors.As(err, &dup) || errors.As(err, &depth) ||
					!errors.As(err, &syn) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("Check = %#v; want a syntax error", err)
				}
			default:
				if err != nil {
					t.Fatalf("Check = %v; want nil", err)
				}
			}
		})
	}
}

// FuzzCheck: no input panics, and Check agrees with encoding/json: a valid
// document passes exactly when decoding it into maps loses no key.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"a":2}`, `{"a":{"b":[{"c":1,"c":2}]}}`, `{"a":1,"\u0061":2}`, `[1,2,[3,{"x":{}}]]`,
		`{"a":1}x`, `{"a":`, strings.Repeat("[", 40), `"\ud800"`, `{"\ud800":1,"\udc00":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := Check(data, 32)
		var (
			dup   *DuplicateError
			depth *DepthError
		)
		if errors.As(err, &dup) && dup.Path == "" {
			t.Fatal("a duplicate without a path")
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			if err == nil {
				t.Fatalf("Check passed %q, which encoding/json refuses", data)
			}
			return
		}
		if errors.As(err, &depth) {
			return // deeper than 32 is refused whatever the keys
		}
		keys, entries := countKeys(t, data), countEntries(v)
		switch {
		case err == nil && keys != entries:
			t.Fatalf("Check passed %q, but decoding keeps %d of its %d keys", data, entries, keys)
		case dup != nil && keys == entries:
			t.Fatalf("Check found %v in %q, but decoding keeps every key", err, data)
		case err != nil && dup == nil:
			t.Fatalf("Check refused %q, which encoding/json reads: %v", data, err)
		}
	})
}

// countKeys counts the keys of every object in the first value of data,
// which is valid JSON.
func countKeys(t *testing.T, data []byte) int {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	// Every string token right after '{' or after a value inside an object
	// is a key; track which containers are objects.
	var (
		stack   []bool // true: object
		wantKey []bool
		n       int
	)
	for {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("re-reading valid JSON: %v", err)
		}
		inObj := len(stack) > 0 && stack[len(stack)-1]
		if inObj && wantKey[len(wantKey)-1] {
			if tok == json.Delim('}') {
				stack, wantKey = stack[:len(stack)-1], wantKey[:len(wantKey)-1]
			} else {
				n++
				wantKey[len(wantKey)-1] = false
				continue
			}
		} else {
			switch tok {
			case json.Delim('{'), json.Delim('['):
				stack = append(stack, tok == json.Delim('{'))
				wantKey = append(wantKey, true)
				continue
			case json.Delim(']'):
				stack, wantKey = stack[:len(stack)-1], wantKey[:len(wantKey)-1]
			}
		}
		if len(stack) == 0 {
			return n
		}
		wantKey[len(wantKey)-1] = true
	}
}

func countEntries(v any) int {
	switch t := v.(type) {
	case map[string]any:
		n := len(t)
		for _, e := range t {
			n += countEntries(e)
		}
		return n
	case []any:
		n := 0
		for _, e := range t {
			n += countEntries(e)
		}
		return n
	}
	return 0
}

// FuzzPlainlyValid: what the allocation-free walk vouches for, the
// decoder's walk passes too, so Check's verdicts are checkTokens' alone.
func FuzzPlainlyValid(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"b":[true,false,null,-0.5e+3,"x\"\\\/\b\f\n\r\t\u00e9"]}`, `{"a":1,"a":2}`, `[01]`, `[1.]`, `[-]`,
		`{"a":1,"\u0061":2}`, `{"é":1,"é":2}`, `[tru]`, `{"a" : { } , "b" : [ ] }`, `["a` + "\x01" + `"]`,
		strings.Repeat("[", 33) + strings.Repeat("]", 33), `{"a":1}x`, `[1e400]`, `["\ud800"]`, `["\u12"]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if plainlyValid(data, 32) {
			if err := checkTokens(data, 32); err != nil {
				t.Fatalf("plainlyValid vouched for %q, which checkTokens refuses: %v", data, err)
			}
		}
	})
}

// TestPlainlyValid: the walk vouches for the documents stkgate reads every
// day, so that Check's common case never reaches the decoder's tokens.
func TestPlainlyValid(t *testing.T) {
	for _, in := range []string{
		`{"phone":"0712345678","amount":1,"reference":"R"}`,
		`{"Body":{"stkCallback":{"MerchantRequestID":"29115-34620561-1","CheckoutRequestID":"ws_CO_191220191020363925",
			"ResultCode":0,"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":[
			{"Name":"Amount","Value":1.00},{"Name":"MpesaReceiptNumber","Value":"NLJ7RT61SV"},{"Name":"Balance"},
			{"Name":"TransactionDate","Value":20191219102115},{"Name":"PhoneNumber","Value":254708374149}]}}}}`,
		`{"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":2}],"d":"caf\u00e9 \"x\""}`,
	} {
		if !plainlyValid([]byte(in), 32) {
			t.Errorf("plainlyValid(%s) = false", in)
		}
	}
	for _, in := range []string{`{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `[01]`, `{"a":1,}`, `{"a":`, `1`,
		strings.Repeat("[", 33) + strings.Repeat("]", 33)} {
		if plainlyValid([]byte(in), 32) {
			t.Errorf("plainlyValid(%s) = true", in)
		}
	}
}

func BenchmarkCheckCallback(b *testing.B) {
	body := []byte(`{"Body":{"stkCallback":{"MerchantRequestID":"29115-34620561-1","CheckoutRequestID":"ws_CO_191220191020363925","ResultCode":0,"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":[{"Name":"Amount","Value":1.00},{"Name":"MpesaReceiptNumber","Value":"NLJ7RT61SV"},{"Name":"Balance"},{"Name":"TransactionDate","Value":20191219102115},{"Name":"PhoneNumber","Value":254708374149}]}}}}`)
	b.Run("Check", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := Check(body, 32); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("checkTokens", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := checkTokens(body, 32); err != nil {
				b.Fatal(err)
			}
		}
	})
}
