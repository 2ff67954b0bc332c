package callback

import "encoding/json"

// parsePlain is ParseCallback's reading of a body uniquekeys.Check has
// passed (valid JSON, no key twice, nested within maxJSONDepth), without
// decoding it into maps: it finds the few values a callback is read from in
// the bytes, and hands each, as encoding/json with UseNumber would have
// decoded it, to the same checks (identifier, resultCode, description,
// itemReaders) in the same order. ok is false for a body it cannot read
// exactly as encoding/json does: data after the value, a top value that is
// not an object, a key it would have to unescape (or one outside ASCII) in
// an object it looks into, a string it would hand on with an escape or a
// byte outside ASCII. ParseCallback then reads the body by encoding/json,
// so every such body keeps the old reading (TestParsePlainMatchesDecoded,
// FuzzParseCallback).
//
// Its scan (rawAt, members) has no bounds checks of its own: it trusts
// Check's validation. Should a body Check passes ever be scanned past its
// end (Check made more lenient, or parsePlain called without it), the
// panic is not a forger's way to crash the service: parsePlain answers
// ok false and the old reading decides (TestParsePlainSurvivesUncheckedBodies).
func parsePlain(body []byte) (cb Callback, ok bool, err error) {
	defer func() {
		if recover() != nil {
			cb, ok, err = Callback{}, false, nil
		}
	}()
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return Callback{}, false, nil
	}
	top, end := rawAt(body, i)
	if skipSpace(body, end) != len(body) {
		return Callback{}, false, nil
	}
	var tops [1]rawValue
	if !top.members([]string{"Body"}, tops[:]) {
		return Callback{}, false, nil
	}
	b, err := tops[0].object("Body")
	if err != nil {
		return Callback{}, true, err
	}
	var bs [1]rawValue
	if !b.members([]string{"stkCallback"}, bs[:]) {
		return Callback{}, false, nil
	}
	stk, err := bs[0].object("stkCallback")
	if err != nil {
		return Callback{}, true, err
	}
	var f [len(stkKeys)]rawValue
	if !stk.members(stkKeys[:], f[:]) {
		return Callback{}, false, nil
	}
	// In stkKeys' order: the checks' order is ParseCallback's.
	var v [4]any
	for k := range v {
		if v[k], ok = f[k].scalar(); !ok {
			return Callback{}, false, nil
		}
	}
	if cb.MerchantRequestID, err = identifier(v[0], "MerchantRequestID", false); err != nil {
		return Callback{}, true, err
	}
	if cb.CheckoutRequestID, err = identifier(v[1], "CheckoutRequestID", true); err != nil {
		return Callback{}, true, err
	}
	if cb.ResultCode, err = resultCode(v[2]); err != nil {
		return Callback{}, true, err
	}
	if cb.ResultDesc, err = description(v[3]); err != nil {
		return Callback{}, true, err
	}
	if ok, err := readPlainMetadata(f[4], &cb); !ok || err != nil {
		return Callback{}, ok, err
	}
	if cb.Success() && cb.Receipt == "" {
		return Callback{}, true, invalid("success without MpesaReceiptNumber")
	}
	return cb, true, nil
}

// stkKeys are the members of stkCallback a callback is read from.
var stkKeys = [...]string{"MerchantRequestID", "CheckoutRequestID", "ResultCode", "ResultDesc", "CallbackMetadata"}

// readPlainMetadata is readMetadata over the bytes of v, CallbackMetadata.
func readPlainMetadata(v rawValue, cb *Callback) (ok bool, err error) {
	switch v.kind {
	case 0, 'n':
		return true, nil
	case '{':
	default:
		return true, invalid("CallbackMetadata not an object")
	}
	var md [1]rawValue
	if !v.members([]string{"Item"}, md[:]) {
		return false, nil
	}
	items := md[0]
	switch items.kind {
	case 0, 'n':
		return true, nil
	case '[':
	default:
		return true, invalid("CallbackMetadata.Item not an array")
	}
	var seen [len(itemNames)]bool
	i := skipSpace(items.text, 1)
	for items.text[i] != ']' {
		it, end := rawAt(items.text, i)
		if i = skipSpace(items.text, end); items.text[i] == ',' {
			i = skipSpace(items.text, i+1)
		}
		if it.kind != '{' {
			return true, invalid("CallbackMetadata.Item has a non-object")
		}
		var nv [2]rawValue
		if !it.members([]string{"Name", "Value"}, nv[:]) {
			return false, nil
		}
		if nv[0].kind != '"' {
			return true, invalid("CallbackMetadata.Item without a Name")
		}
		if !nv[0].plain {
			return false, nil
		}
		k := -1
		for j, name := range itemNames {
			if string(nv[0].text) == name {
				k = j
				break
			}
		}
		if k < 0 {
			continue // Balance, and whatever Daraja adds later
		}
		if seen[k] {
			return true, invalid("duplicate %s", itemNames[k])
		}
		seen[k] = true
		value, ok := nv[1].scalar()
		if !ok {
			return false, nil
		}
		if value != nil {
			if err := itemReaders[itemNames[k]](value, cb); err != nil {
				return true, err
			}
		}
	}
	return true, nil
}

// itemNames are itemReaders' keys (TestItemNames).
var itemNames = [...]string{"Amount", "MpesaReceiptNumber", "TransactionDate", "PhoneNumber"}

// rawValue is one JSON value of a body as it stands.
type rawValue struct {
	// kind is '{', '[', '"', 'n' (null), 't', 'f', or '0' for a number;
	// 0 for a member not there.
	kind byte
	// text is a string's bytes between its quotes, a number's literal, an
	// object's or array's bytes with its brackets.
	text []byte
	// plain: a string without escapes or bytes outside ASCII, its bytes its
	// value.
	plain bool
}

// notScalar stands for true, false, an object or an array handed to a
// check of a scalar: like encoding/json's bool, map and slice, it is
// neither nil, a string nor a json.Number.
type notScalar struct{}

// scalar is v as encoding/json with UseNumber decodes it into an any, for
// the checks of a scalar; ok is false for a string it cannot take as it
// stands.
func (v rawValue) scalar() (any, bool) {
	switch v.kind {
	case 0, 'n':
		return nil, true
	case '"':
		if !v.plain {
			return nil, false
		}
		return string(v.text), true
	case '0':
		return json.Number(v.text), true
	}
	return notScalar{}, true
}

// object is what ParseCallback's object makes of v, the member key: the
// object, or why not.
func (v rawValue) object(key string) (rawValue, error) {
	switch v.kind {
	case 0, 'n':
		return rawValue{}, invalid("missing %s", key)
	case '{':
		return v, nil
	}
	return rawValue{}, invalid("%s not an object", key)
}

// members finds the members keys of v, an object, in out (kind 0 for one
// not there). It reports false when v has a key that is not plain: one
// that might be one of keys once unescaped.
func (v rawValue) members(keys []string, out []rawValue) bool {
	b := v.text
	i := skipSpace(b, 1)
	for b[i] != '}' {
		key, end := rawAt(b, i)
		if !key.plain {
			return false
		}
		i = skipSpace(b, end)
		i = skipSpace(b, i+1) // the colon
		val, end := rawAt(b, i)
		for k, name := range keys {
			if string(key.text) == name {
				out[k] = val
				break
			}
		}
		if i = skipSpace(b, end); b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return true
}

// rawAt reads the value that begins at b[i], in JSON known to be valid,
// and returns it and the index just after it.
func rawAt(b []byte, i int) (rawValue, int) {
	switch c := b[i]; c {
	case '"':
		plain := true
		for j := i + 1; ; j++ {
			switch b[j] {
			case '"':
				return rawValue{kind: '"', text: b[i+1 : j], plain: plain}, j + 1
			case '\\':
				plain = false
				j++ // the escaped byte; \uXXXX's digits are not quotes
			default:
				if b[j] >= 0x80 {
					plain = false
				}
			}
		}
	case '{', '[':
		depth := 0
		for j := i; ; j++ {
			switch b[j] {
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return rawValue{kind: c, text: b[i : j+1]}, j + 1
				}
			case '"':
				_, end := rawAt(b, j)
				j = end - 1
			}
		}
	case 't':
		return rawValue{kind: c}, i + len("true")
	case 'f':
		return rawValue{kind: c}, i + len("false")
	case 'n':
		return rawValue{kind: c}, i + len("null")
	}
	j := i
	for j < len(b) && isNumberByte(b[j]) {
		j++
	}
	return rawValue{kind: '0', text: b[i:j]}, j
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// skipSpace returns the index of the first byte of b from i on that is not
// JSON whitespace, or len(b).
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}
