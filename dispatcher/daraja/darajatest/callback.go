package darajatest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
)

// CallbackDelivery is one callback the server sent (or tried to).
type CallbackDelivery struct {
	At                time.Time
	URL               string
	Body              []byte // exactly as sent
	StatusCode        int    // the answer's status; 0 when none came
	ResponseBody      []byte // the answer's body (at most 64 KiB)
	Error             string // why no answer came, if none did
	MerchantRequestID string
	CheckoutRequestID string
	Phone             string
	ResultCode        string
}

// callbackBody is Daraja's callback, in its field order.
type callbackBody struct {
	Body struct {
		StkCallback stkCallback `json:"stkCallback"`
	} `json:"Body"`
}

type stkCallback struct {
	MerchantRequestID string
	CheckoutRequestID string
	ResultCode        json.RawMessage // a number, but a string for codes like SFC_IC0003
	ResultDesc        string
	CallbackMetadata  *callbackMetadata `json:",omitempty"`
}

type callbackMetadata struct {
	Item []callbackItem
}

type callbackItem struct {
	Name  string
	Value json.RawMessage `json:",omitempty"` // absent for Balance, as Daraja sends it
}

// finish makes t's outcome final, releases its phone and sends its
// callback. It runs once per accepted push, from its timer or Flush.
func (s *Server) finish(t *txn) {
	defer s.wg.Done()
	s.mu.Lock()
	t.final = true
	if s.open[t.phone] == t {
		delete(s.open, t.phone)
	}
	closed := s.closed
	s.notifyLocked()
	s.mu.Unlock()

	if !closed && !t.noCallback {
		s.deliver(t)
	} else if t.noCallback {
		s.log.Info("outcome final, callback withheld", "checkout_request_id", t.checkoutID, "result_code", t.resultCode)
	}

	s.mu.Lock()
	s.pending--
	s.notifyLocked()
	s.mu.Unlock()
}

// Flush makes every pending outcome final now and sends its callback,
// instead of after the delay. Use Drain to wait for the callbacks.
func (s *Server) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for _, t := range s.txns {
		if !t.final && t.timer != nil && t.timer.Stop() {
			go s.finish(t) // keeps the s.wg count its timer held
		}
	}
}

// callbackJSON is the callback body for t's outcome.
func (s *Server) callbackJSON(t *txn, now time.Time) ([]byte, error) {
	return CallbackJSON(Callback{MerchantRequestID: t.merchantID, CheckoutRequestID: t.checkoutID,
		ResultCode: t.resultCode, ResultDesc: t.resultDesc, Amount: t.amount, Receipt: newReceipt(),
		Phone: t.phone, TransactionDate: now})
}

// Callback is what a callback of Daraja's says; CallbackJSON writes it in
// Daraja's shape. A fault test uses it to send callbacks Daraja did not
// (forgeries, with a payment's CallBackURL).
type Callback struct {
	MerchantRequestID string
	CheckoutRequestID string
	ResultCode        string // "0", "1032", or a code like SFC_IC0003
	ResultDesc        string // "": the fake's wording of ResultCode
	// Of a success (ResultCode "0") only: its CallbackMetadata.
	Amount          int64
	Receipt         string
	Phone           string
	TransactionDate time.Time
}

// CallbackJSON is c's body as Daraja sends it: its field order, a numeric
// ResultCode where the code is digits, and the metadata of a success.
func CallbackJSON(c Callback) ([]byte, error) {
	var cb callbackBody
	b := &cb.Body.StkCallback
	b.MerchantRequestID, b.CheckoutRequestID, b.ResultDesc = c.MerchantRequestID, c.CheckoutRequestID, c.ResultDesc
	if b.ResultDesc == "" {
		b.ResultDesc = resultDescs[c.ResultCode]
	}
	if digitsRE.MatchString(c.ResultCode) {
		b.ResultCode = json.RawMessage(strings.TrimLeft(c.ResultCode, "0"))
		if len(b.ResultCode) == 0 {
			b.ResultCode = json.RawMessage("0")
		}
	} else {
		q, err := json.Marshal(c.ResultCode)
		if err != nil {
			return nil, err
		}
		b.ResultCode = q
	}
	if c.ResultCode == "0" {
		b.CallbackMetadata = &callbackMetadata{Item: []callbackItem{
			// Daraja writes the amount with decimals: 1500.00.
			{Name: "Amount", Value: json.RawMessage(strconv.FormatInt(c.Amount, 10) + ".00")},
			{Name: "MpesaReceiptNumber", Value: mustJSON(c.Receipt)},
			{Name: "Balance"},
			{Name: "TransactionDate", Value: json.RawMessage(c.TransactionDate.In(daraja.Nairobi()).Format(daraja.TimestampLayout))},
			{Name: "PhoneNumber", Value: json.RawMessage(c.Phone)},
		}}
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cb); err != nil {
		return nil, err
	}
	return bytes.TrimRight(out.Bytes(), "\n"), nil
}

func mustJSON(s string) json.RawMessage {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

// deliver POSTs t's callback once; Daraja does not retry.
func (s *Server) deliver(t *txn) {
	now := time.Now()
	d := CallbackDelivery{
		At:                now,
		URL:               t.callbackURL,
		MerchantRequestID: t.merchantID,
		CheckoutRequestID: t.checkoutID,
		Phone:             t.phone,
		ResultCode:        t.resultCode,
	}
	defer func() { s.recordCallback(d) }()
	body, err := s.callbackJSON(t, now)
	if err != nil {
		d.Error = "encoding: " + err.Error()
		return
	}
	d.Body = body
	ctx, cancel := context.WithTimeout(s.ctx, callbackTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.callbackURL, bytes.NewReader(body))
	if err != nil {
		d.Error = err.Error()
		return
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("BusinessShortCode", s.opts.ShortCode)
	resp, err := s.hc.Do(req)
	if err != nil {
		d.Error = err.Error()
		s.log.Warn("callback not delivered", "checkout_request_id", t.checkoutID, "phone", events.MaskPhone(t.phone), "error", err)
		return
	}
	defer resp.Body.Close()
	d.StatusCode = resp.StatusCode
	d.ResponseBody, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	s.log.Info("callback delivered", "checkout_request_id", t.checkoutID, "phone", events.MaskPhone(t.phone),
		"result_code", t.resultCode, "http_status", resp.StatusCode)
}

// Filter selects pushes.
type Filter func(Push) bool

// WithPhone selects the pushes to phone.
func WithPhone(phone string) Filter { return func(p Push) bool { return p.Body.PhoneNumber == phone } }

// WithCallbackURL selects the pushes with exactly this CallBackURL.
func WithCallbackURL(u string) Filter { return func(p Push) bool { return p.Body.CallBackURL == u } }

// WithCallbackURLSuffix selects the pushes whose CallBackURL ends with
// suffix (such as "/" + a tracking id).
func WithCallbackURLSuffix(suffix string) Filter {
	return func(p Push) bool { return strings.HasSuffix(p.Body.CallBackURL, suffix) }
}

func (s *Server) recordPush(p Push) {
	s.mu.Lock()
	s.pushes = append(s.pushes, p)
	s.notifyLocked()
	s.mu.Unlock()
}

func (s *Server) recordQuery(q Query) {
	s.mu.Lock()
	s.queries = append(s.queries, q)
	s.notifyLocked()
	s.mu.Unlock()
}

func (s *Server) recordCallback(d CallbackDelivery) {
	s.mu.Lock()
	s.callbacks = append(s.callbacks, d)
	s.notifyLocked()
	s.mu.Unlock()
}

// Pushes is every push request received, in order, whether accepted or not.
// A push is recorded once its answer is complete.
func (s *Server) Pushes() []Push {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Push(nil), s.pushes...)
}

// AcceptedPushes is the pushes that prompted a customer and passed every
// filter: len(AcceptedPushes(WithCallbackURL(u))) counts the prompts sent
// for one payment.
func (s *Server) AcceptedPushes(filters ...Filter) []Push {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Push
	for _, p := range s.pushes {
		if p.Accepted && all(p, filters) {
			out = append(out, p)
		}
	}
	return out
}

func all(p Push, filters []Filter) bool {
	for _, f := range filters {
		if !f(p) {
			return false
		}
	}
	return true
}

// Queries is every STK query received, in order.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

// Callbacks is every callback sent (or attempted), in order.
func (s *Server) Callbacks() []CallbackDelivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CallbackDelivery(nil), s.callbacks...)
}

// ErrClosed is returned by the waits when the server closes first.
var ErrClosed = errors.New("darajatest: server closed")

// WaitFor waits until cond is true, checking it after every change the
// server records (push, query, outcome, callback). cond may call the
// server's methods.
func (s *Server) WaitFor(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ch, closed := s.changed, s.closed
		s.mu.Unlock()
		if cond() {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitCallbacks waits until at least n callbacks have been sent (or tried)
// and returns them all.
func (s *Server) WaitCallbacks(ctx context.Context, n int) ([]CallbackDelivery, error) {
	err := s.WaitFor(ctx, func() bool { return len(s.Callbacks()) >= n })
	return s.Callbacks(), err
}

// WaitPushes waits until at least n accepted pushes pass the filters and
// returns them.
func (s *Server) WaitPushes(ctx context.Context, n int, filters ...Filter) ([]Push, error) {
	err := s.WaitFor(ctx, func() bool { return len(s.AcceptedPushes(filters...)) >= n })
	return s.AcceptedPushes(filters...), err
}

// Drain waits until every accepted push has its final outcome and its
// callback has been sent (or tried).
func (s *Server) Drain(ctx context.Context) error {
	return s.WaitFor(ctx, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.pending == 0
	})
}
