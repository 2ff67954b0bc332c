// Package callback receives Safaricom's STK push callbacks (the POST Daraja
// sends to the CallBackURL) and turns each into an stk.completed event. It
// holds the parser of the callback body, the HTTP handler and the service's
// Run.
//
// Safaricom sends a callback once and never again, so every callback is kept
// raw in the STK_CALLBACKS stream before anything else is done with it: on
// stkcb.received.<tracking_id> when it names a payment stkgate knows, on
// stkcb.unmatched.<reason> otherwise (see events.Unmatched*). Only once that
// copy is stored is its stk.completed published; if it cannot be stored the
// answer is 503 and nothing is published. A kept callback whose outcome did
// not make it into the stream (the service died, a publish or a lookup
// failed) is applied by the Applier.
package callback

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/uniquekeys"
)

// Callback is what Safaricom reported about one STK push. The metadata
// fields come from CallbackMetadata, which Daraja sends only on success.
type Callback struct {
	MerchantRequestID string `json:"merchant_request_id"`
	CheckoutRequestID string `json:"checkout_request_id"`
	// ResultCode is Daraja's ResultCode as a string: "0", "1032", or a code
	// Daraja sent as a string ("SFC_IC0003").
	ResultCode string `json:"result_code"`
	// ResultDesc is Daraja's text ("[STK_CB - ]SMSC ACK timeout.") cleaned
	// by events.CleanText: a stray control character or invalid UTF-8 in it
	// must not cost the callback, nor stall the projector.
	ResultDesc string `json:"result_desc"`
	// Amount in whole KES; 0 when the callback carries none.
	Amount int64 `json:"amount,omitempty"`
	// Receipt is the MpesaReceiptNumber.
	Receipt string `json:"receipt,omitempty"`
	// TransactionDate is in events.TransactionDateLayout, East Africa Time.
	TransactionDate string `json:"transaction_date,omitempty"`
	// Phone is the payer as Daraja wrote it: digits (254712345678) when it
	// sent a number, else the string it sent, cleaned by events.CleanText.
	Phone string `json:"phone,omitempty"`
}

// Success reports whether the customer paid.
func (c Callback) Success() bool { return c.ResultCode == "0" }

// InvalidError is why a callback body was refused. Reason is short, never
// quotes the input (which may hold a phone number), and is safe to send back.
type InvalidError struct {
	Reason string
}

func (e *InvalidError) Error() string { return "invalid callback: " + e.Reason }

func invalid(format string, args ...any) error {
	return &InvalidError{Reason: fmt.Sprintf(format, args...)}
}

// Bounds on what a real callback holds. They keep garbage out of the events
// (and the read model's columns) rather than limit Daraja.
const (
	maxIDLen     = 128
	maxPhoneLen  = 32
	maxAmountLen = 12 // digits of whole KES: far above any M-Pesa limit, far below int64
	// maxJSONDepth: a callback nests 5 deep (Body, stkCallback,
	// CallbackMetadata, Item, an item); the rest is room for what Daraja
	// may add.
	maxJSONDepth = 32
)

// transactionDateWire is Daraja's TransactionDate: YYYYMMDDHHmmss.
const transactionDateWire = "20060102150405"

// eat is East Africa Time. Daraja's dates are already in it; the zone only
// matters for validating the date, and a fixed one needs no tzdata.
var eat = time.FixedZone("EAT", 3*60*60)

// ParseCallback reads a callback body. It accepts what Daraja has been seen
// to send (numbers as numbers or as strings, items in any order, a Balance
// without Value, unknown fields) and refuses anything whose meaning is in
// doubt, with an *InvalidError.
//
// A body with a key given twice anywhere ({"ResultCode":1032,"ResultCode":0})
// is refused, not read as encoding/json would (the last one wins): a forged
// or garbled callback must not get to choose its meaning.
//
// A body Daraja sends is read from its bytes (parsePlain); one with an
// escape or a byte outside ASCII where it is read, or data after its value,
// is decoded by encoding/json (parseDecoded). Both give every body the same
// answer.
func ParseCallback(body []byte) (Callback, error) {
	if err := uniquekeys.Check(body, maxJSONDepth); err != nil {
		var (
			dup   *uniquekeys.DuplicateError
			depth *uniquekeys.DepthError
		)
		switch {
		case errors.As(err, &dup) && dup.Plain:
			return Callback{}, invalid("duplicate key %s", dup.Path)
		case errors.As(err, &dup):
			// Its path quotes the sender's keys, which may hold anything.
			return Callback{}, invalid("duplicate key")
		case errors.As(err, &depth):
			return Callback{}, invalid("nested more than %d levels deep", depth.Max)
		}
		return Callback{}, invalid("not JSON")
	}
	if cb, ok, err := parsePlain(body); ok {
		return cb, err
	}
	return parseDecoded(body)
}

// parseDecoded is ParseCallback's reading, by encoding/json, of a body
// uniquekeys.Check has passed and parsePlain could not read.
func parseDecoded(body []byte) (Callback, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var root any
	if err := dec.Decode(&root); err != nil {
		return Callback{}, invalid("not JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Callback{}, invalid("data after the JSON value")
	}
	top, ok := root.(map[string]any)
	if !ok {
		return Callback{}, invalid("not a JSON object")
	}
	b, err := object(top, "Body")
	if err != nil {
		return Callback{}, err
	}
	stk, err := object(b, "stkCallback")
	if err != nil {
		return Callback{}, err
	}

	var cb Callback
	if cb.MerchantRequestID, err = identifier(stk["MerchantRequestID"], "MerchantRequestID", false); err != nil {
		return Callback{}, err
	}
	if cb.CheckoutRequestID, err = identifier(stk["CheckoutRequestID"], "CheckoutRequestID", true); err != nil {
		return Callback{}, err
	}
	if cb.ResultCode, err = resultCode(stk["ResultCode"]); err != nil {
		return Callback{}, err
	}
	if cb.ResultDesc, err = description(stk["ResultDesc"]); err != nil {
		return Callback{}, err
	}
	if err := readMetadata(stk["CallbackMetadata"], &cb); err != nil {
		return Callback{}, err
	}
	if cb.Success() && cb.Receipt == "" {
		return Callback{}, invalid("success without MpesaReceiptNumber")
	}
	return cb, nil
}

// object returns the object under key, which must be there.
func object(parent map[string]any, key string) (map[string]any, error) {
	v, ok := parent[key]
	if !ok || v == nil {
		return nil, invalid("missing %s", key)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, invalid("%s not an object", key)
	}
	return m, nil
}

// identifier reads v, the value of key in stkCallback (nil when absent).
func identifier(v any, key string, required bool) (string, error) {
	if v == nil {
		if required {
			return "", invalid("missing %s", key)
		}
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", invalid("%s not a string", key)
	}
	switch {
	case s == "" && required:
		return "", invalid("missing %s", key)
	case len(s) > maxIDLen:
		return "", invalid("%s too long", key)
	case !printable(s):
		// Refused, not cleaned: an id is compared with Daraja's, and two
		// ids must not become one. The callback is still kept raw.
		return "", invalid("%s has control characters", key)
	}
	return s, nil
}

// resultCode accepts a number or a numeric string and keeps it as the digits,
// so "0" means success however it was written. A code that is not a number
// (SFC_IC0003) is kept as given: it can never read as success.
func resultCode(v any) (string, error) {
	var s string
	switch t := v.(type) {
	case nil:
		return "", invalid("missing ResultCode")
	case json.Number:
		s = string(t)
	case string:
		if t != "" && isLetter(t[0]) {
			if len(t) > 32 || !isCode(t) {
				return "", invalid("ResultCode malformed")
			}
			// stkgate.* codes are the outcomes stkgate decides itself
			// (events.DecidedByStkgate): a callback claiming one could pass
			// for stkgate's own word, or be taken for a late result.
			if strings.HasPrefix(strings.ToLower(t), events.CodePrefix) {
				return "", invalid("ResultCode is one of stkgate's own")
			}
			return t, nil
		}
		s = t
	default:
		return "", invalid("ResultCode not a number")
	}
	if !isDigits(s) || (len(s) > 1 && s[0] == '0') {
		return "", invalid("ResultCode not a whole number")
	}
	if _, err := strconv.ParseUint(s, 10, 32); err != nil {
		return "", invalid("ResultCode out of range")
	}
	return s, nil
}

func description(v any) (string, error) {
	if v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", invalid("ResultDesc not a string")
	}
	// Cleaned, not refused: Postgres cannot store NUL in text or jsonb (an
	// event carrying one would stall the projector), but the callback is
	// Safaricom's only word on the payment.
	return events.CleanText(s, events.MaxTextRunes), nil
}

func readMetadata(v any, cb *Callback) error {
	if v == nil {
		return nil
	}
	md, ok := v.(map[string]any)
	if !ok {
		return invalid("CallbackMetadata not an object")
	}
	if md["Item"] == nil {
		return nil
	}
	items, ok := md["Item"].([]any)
	if !ok {
		return invalid("CallbackMetadata.Item not an array")
	}
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		item, ok := it.(map[string]any)
		if !ok {
			return invalid("CallbackMetadata.Item has a non-object")
		}
		name, ok := item["Name"].(string)
		if !ok {
			return invalid("CallbackMetadata.Item without a Name")
		}
		read := itemReaders[name]
		if read == nil {
			continue // Balance, and whatever Daraja adds later
		}
		// Two values for one name leave the meaning in doubt.
		if seen[name] {
			return invalid("duplicate %s", name)
		}
		seen[name] = true
		if value := item["Value"]; value != nil {
			if err := read(value, cb); err != nil {
				return err
			}
		}
	}
	return nil
}

var itemReaders = map[string]func(any, *Callback) error{
	"Amount": func(v any, cb *Callback) (err error) {
		cb.Amount, err = amount(v)
		return err
	},
	"MpesaReceiptNumber": func(v any, cb *Callback) (err error) {
		cb.Receipt, err = receipt(v)
		return err
	},
	"TransactionDate": func(v any, cb *Callback) (err error) {
		cb.TransactionDate, err = transactionDate(v)
		return err
	},
	"PhoneNumber": func(v any, cb *Callback) (err error) {
		cb.Phone, err = phone(v)
		return err
	},
}

// amount reads a decimal (1, 1.0, 1500.00) as whole KES without going
// through a float, which could round a fraction away.
func amount(v any) (int64, error) {
	s, ok := numberText(v)
	if !ok {
		return 0, invalid("Amount not a number")
	}
	if strings.HasPrefix(s, "-") {
		return 0, invalid("amount not positive")
	}
	whole, frac, hasFrac := strings.Cut(s, ".")
	if !isDigits(whole) || (hasFrac && !isDigits(frac)) {
		return 0, invalid("amount not a plain decimal")
	}
	if strings.Trim(frac, "0") != "" {
		return 0, invalid("amount not whole")
	}
	if len(whole) > 1 && whole[0] == '0' {
		return 0, invalid("amount not a plain decimal")
	}
	if len(whole) > maxAmountLen {
		return 0, invalid("amount out of range")
	}
	n, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, invalid("amount out of range")
	}
	if n == 0 {
		return 0, invalid("amount not positive")
	}
	return n, nil
}

func receipt(v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", invalid("MpesaReceiptNumber not a string")
	}
	if s == "" || len(s) > 32 || !isAlnum(s) {
		return "", invalid("MpesaReceiptNumber malformed")
	}
	return s, nil
}

func transactionDate(v any) (string, error) {
	s, ok := numberText(v)
	if !ok {
		return "", invalid("TransactionDate not a number")
	}
	if len(s) != len(transactionDateWire) || !isDigits(s) {
		return "", invalid("TransactionDate not YYYYMMDDHHmmss")
	}
	t, err := time.ParseInLocation(transactionDateWire, s, eat)
	if err != nil {
		return "", invalid("TransactionDate not a real date")
	}
	return t.Format(events.TransactionDateLayout), nil
}

// phone keeps the payer as given. It only serves to cross-check the request
// and to be logged masked, so a form Daraja may adopt (a masked number, say)
// is not worth refusing a payment over.
func phone(v any) (string, error) {
	switch t := v.(type) {
	case json.Number:
		s := string(t)
		if !isDigits(s) || len(s) > 15 {
			return "", invalid("PhoneNumber not a phone number")
		}
		return s, nil
	case string:
		// A control character is dropped rather than refused: the phone
		// only serves to cross-check, and one that no longer matches the
		// request sends the callback to Daraja's STK query.
		t = events.CleanText(t, 0)
		if t == "" || len(t) > maxPhoneLen {
			return "", invalid("PhoneNumber malformed")
		}
		return t, nil
	default:
		return "", invalid("PhoneNumber not a number")
	}
}

// numberText returns the text of a number, or of a string standing for one.
func numberText(v any) (string, bool) {
	switch t := v.(type) {
	case json.Number:
		return string(t), true
	case string:
		return t, true
	}
	return "", false
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isLetter(s[i]) && (s[i] < '0' || s[i] > '9') {
			return false
		}
	}
	return true
}

// isCode matches error codes such as SFC_IC0003 or 500.001.1001.
func isCode(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && (c < '0' || c > '9') && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// printable refuses ASCII control characters, NUL included.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}
