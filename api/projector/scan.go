package projector

import (
	"time"
	"unicode/utf8"

	"github.com/stkgate/stkgate/events"
)

// decodeScan reads body as events.Decode would, without encoding/json, and
// reports whether it could vouch for the result. It reads only the plain
// JSON the services write: an envelope whose type comes before its data,
// each key spelled exactly as the Go field's tag (a known key of the
// envelope, or of the data of the envelope's type), each at most once,
// strings without escapes, the amount an integer of at most 18 digits, no
// null. Anything else, valid or not, it leaves to decodeOnePass and
// events.Decode (it says false): on what it takes, encoding/json matches
// the same keys to the same fields and reads the same values (a string's
// bytes unchanged, as valid UTF-8 without escapes is; a time through
// time.Time's UnmarshalJSON, as encoding/json calls it).
//
// All the event's strings are cut from one copy of body: one allocation
// where encoding/json makes one a field.
//
// Long because it is one flat pass over the envelope's keys, a case a key,
// each refusing what it cannot vouch for, on the projector's hottest path:
// cut into steps, the key's case would only move away from the loop that
// tracks which keys were seen.
func decodeScan(subject string, body []byte) (events.Event, bool) {
	s := scanner{b: body}
	var (
		typ  string
		seen uint
		ev   events.Event
		id   []byte // the envelope's subject
	)
	if !s.next('{') || s.next('}') {
		return nil, false // not an object, or one without data
	}
	for {
		key, ok := s.str()
		if !ok || !s.next(':') {
			return nil, false
		}
		var bit uint
		switch string(key) {
		case "specversion":
			bit = 1 << 0
			v, ok := s.str()
			if !ok || string(v) != events.SpecVersion {
				return nil, false
			}
		case "id":
			bit = 1 << 1
			if _, ok := s.str(); !ok {
				return nil, false
			}
		case "source":
			bit = 1 << 2
			if _, ok := s.str(); !ok {
				return nil, false
			}
		case "type":
			bit = 1 << 3
			v, ok := s.str()
			if !ok {
				return nil, false
			}
			switch string(v) {
			case events.TypeRequested:
				typ = events.TypeRequested
			case events.TypeDispatched:
				typ = events.TypeDispatched
			case events.TypeCompleted:
				typ = events.TypeCompleted
			case events.TypeLateResult:
				typ = events.TypeLateResult
			default:
				return nil, false
			}
		case "subject":
			bit = 1 << 4
			if id, ok = s.str(); !ok {
				return nil, false
			}
		case "time":
			bit = 1 << 5
			if _, ok := s.time(); !ok {
				return nil, false
			}
		case "datacontenttype":
			bit = 1 << 6
			if _, ok := s.str(); !ok {
				return nil, false
			}
		case "data":
			bit = 1 << 7
			if typ == "" {
				return nil, false // its kind not known yet
			}
			if ev, ok = s.data(typ); !ok {
				return nil, false
			}
		default:
			return nil, false
		}
		if seen&bit != 0 {
			return nil, false // a key twice: encoding/json keeps the last
		}
		seen |= bit
		if s.next(',') {
			continue
		}
		if s.next('}') {
			break
		}
		return nil, false
	}
	if s.space(); s.i != len(s.b) {
		return nil, false
	}
	const need = 1<<0 | 1<<3 | 1<<4 | 1<<7 // specversion, type, subject, data
	if seen&need != need {
		return nil, false
	}
	tracking := ev.Base().TrackingID
	if tracking == "" || tracking != string(id) {
		return nil, false
	}
	// subject == events.Subject(typ, tracking), without building it.
	if len(subject) != len(typ)+1+len(tracking) || subject[:len(typ)] != typ ||
		subject[len(typ)] != '.' || subject[len(typ)+1:] != tracking {
		return nil, false
	}
	return ev, true
}

// Fields of the data, by kind of event: bit i is dataFields[i].
var dataFields = [...]string{
	"tracking_id", "client", "phone", "amount", "reference", "tag", "requested_at", // 0-6: Payment
	"callback_url",                                                                           // 7
	"merchant_request_id", "checkout_request_id", "response_description", "customer_message", // 8-11
	"follows_result_code", "result_code", "result_desc", "receipt", "transaction_date", "source", // 12-17
	"completed_at", "learnt_at", // 18-19
}

const (
	paymentKeys    = 1<<7 - 1
	requestedKeys  = paymentKeys | 1<<7
	dispatchedKeys = paymentKeys | 1<<8 | 1<<9 | 1<<10 | 1<<11
	outcomeKeys    = paymentKeys | 1<<8 | 1<<9 | 1<<13 | 1<<14 | 1<<15 | 1<<16 | 1<<17
	completedKeys  = outcomeKeys | 1<<18
	lateKeys       = outcomeKeys | 1<<12 | 1<<19
)

// data reads the data object of an event of type typ, into the event of
// that type.
func (s *scanner) data(typ string) (events.Event, bool) {
	var allowed uint32
	switch typ {
	case events.TypeRequested:
		allowed = requestedKeys
	case events.TypeDispatched:
		allowed = dispatchedKeys
	case events.TypeCompleted:
		allowed = completedKeys
	default:
		allowed = lateKeys
	}
	var (
		d    anyEvent
		seen uint32
	)
	if !s.next('{') {
		return nil, false
	}
	if !s.next('}') {
		for {
			key, ok := s.str()
			if !ok || !s.next(':') {
				return nil, false
			}
			k := dataKey(key)
			if k < 0 || allowed&(1<<k) == 0 || seen&(1<<k) != 0 {
				return nil, false
			}
			seen |= 1 << k
			switch k {
			case 3:
				if d.Amount, ok = s.int(); !ok {
					return nil, false
				}
			case 6:
				if d.RequestedAt, ok = s.time(); !ok {
					return nil, false
				}
			case 18:
				if d.CompletedAt, ok = s.time(); !ok {
					return nil, false
				}
			case 19:
				if d.LearntAt, ok = s.time(); !ok {
					return nil, false
				}
			default:
				v, ok := s.text()
				if !ok {
					return nil, false
				}
				*d.text(k) = v
			}
			if s.next(',') {
				continue
			}
			if s.next('}') {
				break
			}
			return nil, false
		}
	}
	switch typ {
	case events.TypeRequested:
		return events.Requested{Payment: d.Payment, CallbackURL: d.CallbackURL}, true
	case events.TypeDispatched:
		return events.Dispatched{Payment: d.Payment, MerchantRequestID: d.MerchantRequestID, CheckoutRequestID: d.CheckoutRequestID,
			ResponseDescription: d.ResponseDescription, CustomerMessage: d.CustomerMessage}, true
	case events.TypeCompleted:
		return events.Completed{Payment: d.Payment, ResultCode: d.ResultCode, ResultDesc: d.ResultDesc, Receipt: d.Receipt,
			TransactionDate: d.TransactionDate, Source: d.Source, MerchantRequestID: d.MerchantRequestID,
			CheckoutRequestID: d.CheckoutRequestID, CompletedAt: d.CompletedAt}, true
	}
	return events.LateResult{Payment: d.Payment, FollowsCode: d.FollowsCode, ResultCode: d.ResultCode, ResultDesc: d.ResultDesc,
		Receipt: d.Receipt, TransactionDate: d.TransactionDate, Source: d.Source, MerchantRequestID: d.MerchantRequestID,
		CheckoutRequestID: d.CheckoutRequestID, LearntAt: d.LearntAt}, true
}

// dataKey is key's index in dataFields, -1 if none.
func dataKey(key []byte) int {
	for i, k := range dataFields {
		if string(key) == k {
			return i
		}
	}
	return -1
}

// text is the string field of dataFields[k].
func (d *anyEvent) text(k int) *string {
	switch k {
	case 0:
		return &d.TrackingID
	case 1:
		return &d.Client
	case 2:
		return &d.Phone
	case 4:
		return &d.Reference
	case 5:
		return &d.Tag
	case 7:
		return &d.CallbackURL
	case 8:
		return &d.MerchantRequestID
	case 9:
		return &d.CheckoutRequestID
	case 10:
		return &d.ResponseDescription
	case 11:
		return &d.CustomerMessage
	case 12:
		return &d.FollowsCode
	case 13:
		return &d.ResultCode
	case 14:
		return &d.ResultDesc
	case 15:
		return &d.Receipt
	case 16:
		return &d.TransactionDate
	}
	return &d.Source // 17
}

// scanner reads JSON from b at i.
type scanner struct {
	b []byte
	i int
	// all is b as one string, made on the first text: every string of the
	// event is cut from it.
	all string
}

// space skips JSON's white space.
func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next skips spaces and c, if c is next; it reports whether it was.
func (s *scanner) next(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string without escapes or control characters, in valid
// UTF-8, and returns its bytes: those encoding/json would give.
func (s *scanner) str() ([]byte, bool) {
	lo, hi, ok := s.span()
	if !ok {
		return nil, false
	}
	return s.b[lo:hi], true
}

// text is str as a string cut from the copy of the whole body.
func (s *scanner) text() (string, bool) {
	lo, hi, ok := s.span()
	if !ok {
		return "", false
	}
	if s.all == "" {
		s.all = string(s.b)
	}
	return s.all[lo:hi], true
}

// span reads a string as str does and returns where its bytes are.
func (s *scanner) span() (lo, hi int, ok bool) {
	if !s.next('"') {
		return 0, 0, false
	}
	ascii := true
	for j := s.i; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(s.b[s.i:j]) {
				return 0, 0, false // encoding/json would replace the bad bytes
			}
			lo, hi = s.i, j
			s.i = j + 1
			return lo, hi, true
		case c == '\\' || c < 0x20:
			return 0, 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return 0, 0, false
}

// int reads a JSON integer of at most 18 digits (no fraction, no exponent),
// which fits an int64 as encoding/json reads it.
func (s *scanner) int() (int64, bool) {
	s.space()
	j, neg := s.i, false
	if j < len(s.b) && s.b[j] == '-' {
		neg = true
		j++
	}
	start := j
	var n int64
	for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
		n = n*10 + int64(s.b[j]-'0')
		j++
	}
	digits := j - start
	if digits == 0 || digits > 18 || (digits > 1 && s.b[start] == '0') {
		return 0, false
	}
	if j < len(s.b) && (s.b[j] == '.' || s.b[j] == 'e' || s.b[j] == 'E') {
		return 0, false
	}
	s.i = j
	if neg {
		n = -n
	}
	return n, true
}

// time reads a string as time.Time's UnmarshalJSON does: encoding/json
// hands it the quoted string as it is.
func (s *scanner) time() (time.Time, bool) {
	s.space()
	q := s.i
	if _, _, ok := s.span(); !ok {
		return time.Time{}, false
	}
	var t time.Time
	if err := t.UnmarshalJSON(s.b[q:s.i]); err != nil {
		return time.Time{}, false
	}
	return t, true
}
