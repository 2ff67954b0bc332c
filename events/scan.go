package events

import (
	"time"
	"unicode/utf8"
)

// DecodeScan reads body as Decode would, without encoding/json, and reports
// whether it could vouch for the result: the envelope Decode reads, with
// the event as its data. Where it says false, the caller is to ask Decode
// (or a reader that answers as Decode does), which says what is wrong with
// body if anything: DecodeScan gives no reasons, only the plain bodies the
// services write, fast. It checks what Decode checks and nothing more: the
// subject a message came on is its caller's to check (api/projector's
// Decode).
func DecodeScan(body []byte) (EnvelopeOf[Event], bool) {
	var d scanned
	env, ok := scan(body, &d)
	if !ok {
		return EnvelopeOf[Event]{}, false
	}
	var ev Event
	switch env.Type {
	case TypeRequested:
		ev = d.requested()
	case TypeDispatched:
		ev = d.dispatched()
	case TypeCompleted:
		ev = d.completed()
	default:
		ev = d.late()
	}
	return withData(env, ev), true
}

// scan reads body as Decode would, without encoding/json, into the
// envelope it returns and the event's fields in d, and reports whether it
// could vouch for the result. It reads only the plain JSON the services
// write: an envelope whose type comes before its data, each key spelled
// exactly as the Go field's tag (a known key of the envelope, or of the
// data of the envelope's type), each at most once, strings without
// escapes, the amount an integer of at most 18 digits, no null. Anything
// else, valid or not, it leaves to its caller's fallback (it says false):
// on what it takes, encoding/json matches the same keys to the same fields
// and reads the same values (a string's bytes unchanged, as valid UTF-8
// without escapes is; a time through time.Time's UnmarshalJSON, as
// encoding/json calls it).
//
// All the envelope's and the event's strings are cut from one copy of
// body: one allocation where encoding/json makes one a field. The
// envelope's type and specversion are this package's constants: the same
// strings.
//
// Long because it is one flat pass over the envelope's keys, a case a key,
// each refusing what it cannot vouch for, on the hottest path of the
// projector and of DecodeAs: cut into steps, the key's case would only
// move away from the loop that tracks which keys were seen.
func scan(body []byte, d *scanned) (env EnvelopeOf[struct{}], _ bool) {
	s := scanner{b: body}
	var seen uint
	if !s.next('{') || s.next('}') {
		return env, false // not an object, or one without data
	}
	for {
		key, ok := s.str()
		if !ok || !s.next(':') {
			return env, false
		}
		var bit uint
		var text *string // an envelope field that is a plain string
		switch string(key) {
		case "specversion":
			bit = 1 << 0
			v, ok := s.str()
			if !ok || string(v) != SpecVersion {
				return env, false
			}
			env.SpecVersion = SpecVersion
		case "id":
			bit, text = 1<<1, &env.ID
		case "source":
			bit, text = 1<<2, &env.Source
		case "type":
			bit = 1 << 3
			v, ok := s.str()
			if !ok {
				return env, false
			}
			switch string(v) {
			case TypeRequested:
				env.Type = TypeRequested
			case TypeDispatched:
				env.Type = TypeDispatched
			case TypeCompleted:
				env.Type = TypeCompleted
			case TypeLateResult:
				env.Type = TypeLateResult
			default:
				return env, false
			}
		case "subject":
			bit, text = 1<<4, &env.Subject
		case "time":
			bit = 1 << 5
			if env.Time, ok = s.time(); !ok {
				return env, false
			}
		case "datacontenttype":
			bit, text = 1<<6, &env.DataContentType
		case "data":
			bit = 1 << 7
			if env.Type == "" {
				return env, false // its kind not known yet
			}
			if !s.data(env.Type, d) {
				return env, false
			}
		default:
			return env, false
		}
		if text != nil {
			if *text, ok = s.text(); !ok {
				return env, false
			}
		}
		if seen&bit != 0 {
			return env, false // a key twice: encoding/json keeps the last
		}
		seen |= bit
		if s.next(',') {
			continue
		}
		if s.next('}') {
			break
		}
		return env, false
	}
	if s.space(); s.i != len(s.b) {
		return env, false
	}
	const need = 1<<0 | 1<<3 | 1<<4 | 1<<7 // specversion, type, subject, data
	if seen&need != need {
		return env, false
	}
	if tracking := d.text[0]; tracking == "" || tracking != env.Subject {
		return env, false
	}
	return env, true
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

// scanned is an event's data as scan reads it: its strings by their index
// in dataFields (those of the amount and the times left empty), the amount
// and the times.
type scanned struct {
	text                               [len(dataFields)]string
	amount                             int64
	requestedAt, completedAt, learntAt time.Time
}

func (d *scanned) payment() Payment {
	return Payment{TrackingID: d.text[0], Client: d.text[1], Phone: d.text[2], Amount: d.amount,
		Reference: d.text[4], Tag: d.text[5], RequestedAt: d.requestedAt}
}

func (d *scanned) requested() Requested {
	return Requested{Payment: d.payment(), CallbackURL: d.text[7]}
}

func (d *scanned) dispatched() Dispatched {
	return Dispatched{Payment: d.payment(), MerchantRequestID: d.text[8], CheckoutRequestID: d.text[9],
		ResponseDescription: d.text[10], CustomerMessage: d.text[11]}
}

func (d *scanned) completed() Completed {
	return Completed{Payment: d.payment(), ResultCode: d.text[13], ResultDesc: d.text[14], Receipt: d.text[15],
		TransactionDate: d.text[16], Source: d.text[17], MerchantRequestID: d.text[8], CheckoutRequestID: d.text[9],
		CompletedAt: d.completedAt}
}

func (d *scanned) late() LateResult {
	return LateResult{Payment: d.payment(), FollowsCode: d.text[12], ResultCode: d.text[13], ResultDesc: d.text[14],
		Receipt: d.text[15], TransactionDate: d.text[16], Source: d.text[17], MerchantRequestID: d.text[8],
		CheckoutRequestID: d.text[9], LearntAt: d.learntAt}
}

// data reads the data object of an event of type typ into d: only the keys
// of that type's fields.
func (s *scanner) data(typ string, d *scanned) bool {
	var allowed uint32
	switch typ {
	case TypeRequested:
		allowed = requestedKeys
	case TypeDispatched:
		allowed = dispatchedKeys
	case TypeCompleted:
		allowed = completedKeys
	default:
		allowed = lateKeys
	}
	var seen uint32
	if !s.next('{') {
		return false
	}
	if s.next('}') {
		return true
	}
	for {
		key, ok := s.str()
		if !ok || !s.next(':') {
			return false
		}
		k := dataKey(key)
		if k < 0 || allowed&(1<<k) == 0 || seen&(1<<k) != 0 {
			return false
		}
		seen |= 1 << k
		switch k {
		case 3:
			d.amount, ok = s.int()
		case 6:
			d.requestedAt, ok = s.time()
		case 18:
			d.completedAt, ok = s.time()
		case 19:
			d.learntAt, ok = s.time()
		default:
			d.text[k], ok = s.text()
		}
		if !ok {
			return false
		}
		if s.next(',') {
			continue
		}
		return s.next('}')
	}
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

// scanner reads JSON from b at i.
type scanner struct {
	b []byte
	i int
	// all is b as one string, made on the first text: every string of the
	// envelope and the event is cut from it.
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
