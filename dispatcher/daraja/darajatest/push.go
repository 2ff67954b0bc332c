package darajatest

import (
	"bytes"
	"encoding/json"
	"mime"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
)

// PushBody is a push request's fields as sent, numbers in their JSON text
// ("1500", or "1.5" for a refused decimal) and strings unquoted.
type PushBody struct {
	BusinessShortCode string
	Password          string
	Timestamp         string
	TransactionType   string
	Amount            string
	PartyA            string
	PartyB            string
	PhoneNumber       string
	CallBackURL       string
	AccountReference  string
	TransactionDesc   string
}

// Push is one push request the server received.
type Push struct {
	At          time.Time
	ContentType string
	Raw         []byte   // the body as received
	Body        PushBody // parsed; zero when the body was not a JSON object
	// Accepted: Daraja processed the push and prompted the customer (also
	// when a scripted failure then hid the answer).
	Accepted     bool
	HTTPStatus   int    // the status answered (0 if no answer was sent)
	ErrorCode    string // of the envelope answered, if any
	ErrorMessage string
	Failure      Failure // the scripted failure answered, 0 for none
	// The ids of an accepted push.
	MerchantRequestID string
	CheckoutRequestID string
	// ResultCode is the outcome that an accepted push will have.
	ResultCode string
}

var (
	digitsRE = regexp.MustCompile(`^[0-9]+$`)
	phoneRE  = regexp.MustCompile(`^254[0-9]{9}$`)
)

// handlePush answers a push as Daraja would: it records it (pushBodyOf),
// refuses what Daraja refuses, and opens a transaction for the rest
// (startTxn), whose callback comes later.
func (s *Server) handlePush(w http.ResponseWriter, r *http.Request) {
	raw, readErr := readBody(r)
	rec := Push{At: time.Now(), ContentType: r.Header.Get("Content-Type"), Raw: raw}
	defer func() { s.recordPush(rec) }()

	answer := func(status int, env envelope) {
		rec.HTTPStatus, rec.ErrorCode, rec.ErrorMessage = status, env.ErrorCode, env.ErrorMessage
		writeJSON(w, status, env)
		s.log.Info("push refused", "http_status", status, "error_code", env.ErrorCode, "error_message", env.ErrorMessage,
			"phone", events.MaskPhone(rec.Body.PhoneNumber), "failure", rec.Failure.String())
	}

	// Parsed first so that every push is recorded with its fields, even
	// one refused for its token.
	fields, isObject := parseObject(raw)
	if isObject {
		rec.Body = pushBodyOf(fields)
	}
	if !s.authorized(w, r) {
		rec.HTTPStatus, rec.ErrorCode = http.StatusNotFound, daraja.CodeInvalidToken
		return
	}
	if mt, _, err := mime.ParseMediaType(rec.ContentType); err != nil || mt != "application/json" {
		// What Daraja answers, misleadingly, to a body it did not read as JSON.
		answer(http.StatusBadRequest, badRequest("BusinessShortCode"))
		return
	}
	if readErr != nil || !isObject {
		answer(http.StatusBadRequest, badRequest("JSON"))
		return
	}
	phone := rec.Body.PhoneNumber

	s.mu.Lock()
	rec.Failure = s.nextFailureLocked(phone)
	s.mu.Unlock()
	if rec.Failure != 0 && !rec.Failure.afterAccept() {
		s.fail(w, r, &rec, answer)
		return
	}

	if status, env, bad := s.checkPush(rec.Body); bad {
		answer(status, env)
		return
	}
	amount, _ := strconv.ParseInt(rec.Body.Amount, 10, 64)

	t, delay, ok := s.startTxn(rec.Body, amount, answer)
	if !ok {
		return
	}
	rec.Accepted = true
	rec.MerchantRequestID, rec.CheckoutRequestID, rec.ResultCode = t.merchantID, t.checkoutID, t.resultCode
	s.log.Info("push accepted", "checkout_request_id", t.checkoutID, "phone", events.MaskPhone(phone),
		"amount", amount, "result_code", t.resultCode, "callback_in", delay, "no_callback", t.noCallback)

	if rec.Failure != 0 {
		s.fail(w, r, &rec, answer)
		return
	}
	rec.HTTPStatus = http.StatusOK
	writeJSON(w, http.StatusOK, acceptedAnswer{
		MerchantRequestID:   t.merchantID,
		CheckoutRequestID:   t.checkoutID,
		ResponseCode:        "0",
		ResponseDescription: "Success. Request accepted for processing",
		CustomerMessage:     "Success. Request accepted for processing",
	})
}

// pushBodyOf is the push body of a JSON object's fields.
func pushBodyOf(fields object) PushBody {
	return PushBody{
		BusinessShortCode: fields.text("BusinessShortCode"),
		Password:          fields.text("Password"),
		Timestamp:         fields.text("Timestamp"),
		TransactionType:   fields.text("TransactionType"),
		Amount:            fields.text("Amount"),
		PartyA:            fields.text("PartyA"),
		PartyB:            fields.text("PartyB"),
		PhoneNumber:       fields.text("PhoneNumber"),
		CallBackURL:       fields.text("CallBackURL"),
		AccountReference:  fields.text("AccountReference"),
		TransactionDesc:   fields.text("TransactionDesc"),
	}
}

// startTxn opens the transaction of an accepted push and schedules its
// callback after delay. ok false means none was opened (the server is
// closed, or the phone has a transaction open), and answer was given.
func (s *Server) startTxn(body PushBody, amount int64, answer func(int, envelope)) (t *txn, delay time.Duration, ok bool) {
	phone := body.PhoneNumber
	now := time.Now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		answer(http.StatusServiceUnavailable, envelope{RequestID: newRequestID(), ErrorCode: "503.001.01", ErrorMessage: "Service Unavailable"})
		return nil, 0, false
	}
	if _, locked := s.open[phone]; locked {
		id := s.newCheckoutRequestIDLocked(now)
		s.mu.Unlock()
		answer(http.StatusInternalServerError, lockedEnvelope(id))
		return nil, 0, false
	}
	t, delay = s.newTxnLocked(body, amount, now)
	s.txns[t.checkoutID] = t
	s.open[phone] = t
	s.pending++
	s.wg.Add(1)
	t.timer = time.AfterFunc(delay, func() { s.finish(t) })
	s.mu.Unlock()
	return t, delay, true
}

// newTxnLocked is the transaction of an accepted push, with its outcome
// and callback delay: the phone's (OutcomeFor), unless a script for the
// phone says otherwise. s.mu is held.
func (s *Server) newTxnLocked(body PushBody, amount int64, now time.Time) (*txn, time.Duration) {
	phone := body.PhoneNumber
	t := &txn{
		merchantID:  newMerchantRequestID(),
		checkoutID:  s.newCheckoutRequestIDLocked(now),
		phone:       phone,
		callbackURL: body.CallBackURL,
		amount:      amount,
	}
	t.resultCode, t.resultDesc = OutcomeFor(phone)
	if body.TransactionType == daraja.TransactionPayBill && body.PartyB != s.opts.ShortCode {
		// Daraja accepts the push and the payment then fails.
		t.resultCode, t.resultDesc = "2028", resultDescs["2028"]
	}
	delay := s.opts.CallbackDelay
	if st := s.scripts[phone]; st != nil {
		if st.ResultCode != "" {
			t.resultCode, t.resultDesc = st.ResultCode, resultDescs[st.ResultCode]
			if t.resultDesc == "" {
				t.resultDesc = "The transaction failed."
			}
		}
		if st.ResultDesc != "" {
			t.resultDesc = st.ResultDesc
		}
		t.noCallback = st.NoCallback
		switch {
		case st.CallbackDelay > 0:
			delay = st.CallbackDelay
		case st.CallbackDelay < 0:
			delay = 0
		}
	}
	return t, delay
}

// acceptedAnswer is Daraja's answer to an accepted push, in its field order.
type acceptedAnswer struct {
	MerchantRequestID   string
	CheckoutRequestID   string
	ResponseCode        string
	ResponseDescription string
	CustomerMessage     string
}

func badRequest(field string) envelope {
	return envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeBadRequest, ErrorMessage: "Bad Request - Invalid " + field}
}

func lockedEnvelope(requestID string) envelope {
	return envelope{RequestID: requestID, ErrorCode: daraja.CodeGeneric,
		ErrorMessage: "Unable to lock subscriber, a transaction is already in process for the current subscriber"}
}

// checkPush validates a push body as Daraja does, returning the refusal.
func (s *Server) checkPush(b PushBody) (int, envelope, bool) {
	bad := func(field string) (int, envelope, bool) { return http.StatusBadRequest, badRequest(field), true }
	if st, env, refused := s.checkCredentials(b.BusinessShortCode, b.Timestamp, b.Password); refused {
		return st, env, true
	}
	switch {
	case b.TransactionType != daraja.TransactionPayBill && b.TransactionType != daraja.TransactionBuyGoods:
		return bad("TransactionType")
	case !validAmount(b.Amount):
		return bad("Amount")
	case !phoneRE.MatchString(b.PhoneNumber):
		return bad("PhoneNumber")
	case !phoneRE.MatchString(b.PartyA):
		return bad("PartyA")
	case !digitsRE.MatchString(b.PartyB) || len(b.PartyB) < 5 || len(b.PartyB) > 10:
		return bad("PartyB")
	case !validCallbackURL(b.CallBackURL):
		return bad("CallBackURL")
	case strings.TrimSpace(b.AccountReference) == "" || utf8.RuneCountInString(b.AccountReference) > daraja.MaxAccountReference:
		return bad("AccountReference")
	case utf8.RuneCountInString(b.TransactionDesc) > daraja.MaxTransactionDesc:
		return bad("TransactionDesc")
	}
	return 0, envelope{}, false
}

// checkCredentials checks shortcode, timestamp and password, shared by push
// and query.
func (s *Server) checkCredentials(shortCode, ts, password string) (int, envelope, bool) {
	if !digitsRE.MatchString(shortCode) || len(shortCode) < 5 || len(shortCode) > 7 {
		return http.StatusBadRequest, badRequest("BusinessShortCode"), true
	}
	t, err := daraja.ParseTimestamp(ts)
	if err != nil || len(ts) != len(daraja.TimestampLayout) {
		return http.StatusBadRequest, badRequest("Timestamp"), true
	}
	if d := time.Since(t); d > TimestampTolerance || d < -TimestampTolerance {
		// A timestamp written in UTC (or any zone but Nairobi's) lands here.
		return http.StatusBadRequest, badRequest("Timestamp"), true
	}
	if shortCode != s.opts.ShortCode {
		return http.StatusInternalServerError, envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeGeneric, ErrorMessage: "Merchant does not exist"}, true
	}
	if !equal(password, daraja.Password(s.opts.ShortCode, s.opts.PassKey, ts)) {
		return http.StatusInternalServerError, envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeGeneric, ErrorMessage: "Wrong credentials"}, true
	}
	return 0, envelope{}, false
}

// validAmount: a whole number of shillings, as a JSON number or string;
// decimals (even 1.0) are refused.
func validAmount(s string) bool {
	if !digitsRE.MatchString(s) {
		return false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && n >= daraja.MinAmount && n <= daraja.MaxAmount
}

// validCallbackURL: an absolute http(s) URL, lowercase host, not naming
// M-Pesa (both refused by Daraja).
func validCallbackURL(s string) bool {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return false
	}
	return u.Host == strings.ToLower(u.Host) && !strings.Contains(strings.ToLower(s), "mpesa") &&
		!strings.ContainsAny(s, " \t\r\n")
}

// fail answers a scripted failure.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, rec *Push, answer func(int, envelope)) {
	switch rec.Failure {
	case FailSpikeArrest:
		answer(http.StatusInternalServerError, envelope{RequestID: "", ErrorCode: daraja.CodeSpikeArrest, ErrorMessage: "Error Occurred: Spike Arrest Violation"})
	case FailQuota:
		answer(http.StatusInternalServerError, envelope{RequestID: "", ErrorCode: daraja.CodeQuotaViolation, ErrorMessage: "Error Occurred: Quota Violation"})
	case FailInternal500_003_1001, FailInternalAfterAccept:
		answer(http.StatusInternalServerError, envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeInternal, ErrorMessage: "Internal Server Error"})
	case FailInvalidToken:
		answer(http.StatusNotFound, envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeInvalidToken, ErrorMessage: "Invalid Access Token"})
	case FailInvalidPhone:
		answer(http.StatusBadRequest, badRequest("PhoneNumber"))
	case FailMerchantNotExist:
		answer(http.StatusInternalServerError, envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeGeneric, ErrorMessage: "Merchant does not exist"})
	case FailWrongCredentials:
		answer(http.StatusInternalServerError, envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeGeneric, ErrorMessage: "Wrong credentials"})
	case FailLocked:
		s.mu.Lock()
		id := s.newCheckoutRequestIDLocked(time.Now())
		s.mu.Unlock()
		answer(http.StatusInternalServerError, lockedEnvelope(id))
	case FailServiceUnavailable, FailServiceUnavailableAfterAccept:
		rec.HTTPStatus = writeHTML(w, http.StatusServiceUnavailable, serviceUnavailablePage)
	case FailHTML404:
		rec.HTTPStatus = writeHTML(w, http.StatusNotFound, proxyNotFoundPage)
	case FailHTML403:
		rec.HTTPStatus = writeHTML(w, http.StatusForbidden, firewallPage)
	case FailUnauthorizedEmpty:
		rec.HTTPStatus = http.StatusUnauthorized
		w.WriteHeader(http.StatusUnauthorized)
	case FailNULMessage:
		answer(http.StatusBadRequest, envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeBadRequest, ErrorMessage: nulMessage})
	case FailTooManyRequests:
		rec.HTTPStatus = http.StatusTooManyRequests
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"fault":{"faultstring":"Spike arrest violation. Allowed rate : MessageRate{messagesPerPeriod=5, periodInMicroseconds=1000000, maxBurstMessageCount=1.0}","detail":{"errorcode":"policies.ratelimit.SpikeArrestViolation"}}}`))
	case FailTimeout, FailTimeoutAfterAccept:
		s.log.Info("push held without an answer", "failure", rec.Failure.String())
		timer := time.NewTimer(maxHang)
		defer timer.Stop()
		select {
		case <-r.Context().Done():
		case <-s.stop:
			reset(w) // returning would answer 200
		case <-timer.C:
			reset(w)
		}
	case FailResetAfterRead, FailResetAfterAccept:
		s.log.Info("push connection reset without an answer", "failure", rec.Failure.String())
		reset(w)
	default:
		answer(http.StatusInternalServerError, envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeInternal, ErrorMessage: "Internal Server Error"})
	}
}

// reset closes the connection with a TCP RST, the request having been read.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // closes the connection without an answer
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// writeHTML answers status with an HTML page, as the proxies and gateways
// in front of Daraja do, and returns status.
func writeHTML(w http.ResponseWriter, status int, page string) int {
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(page))
	return status
}

// nulMessage is FailNULMessage's errorMessage: Daraja's text with a NUL
// byte and other control characters in it.
const nulMessage = "Bad Request - Invalid PhoneNumber\x00\x01\r\n\x1b[0m"

const proxyNotFoundPage = `<html>
<head><title>404 Not Found</title></head>
<body>
<center><h1>404 Not Found</h1></center>
<hr><center>nginx</center>
</body>
</html>
`

const firewallPage = `<!DOCTYPE html>
<html><head><title>Request Rejected</title></head>
<body>The requested URL was rejected. Please consult with your administrator.<br><br>
Your support ID is: 1498126375638162817<br><br><a href='javascript:history.back();'>[Go Back]</a></body></html>
`

const serviceUnavailablePage = `<!DOCTYPE html>
<html><head><title>503 Service Unavailable</title></head>
<body><h1>Service Unavailable</h1><p>The server is temporarily unable to service your request. Please try again later.</p></body></html>
`

// object is a JSON object's members, undecoded.
type object map[string]json.RawMessage

func parseObject(b []byte) (object, bool) {
	var o object
	if err := json.Unmarshal(b, &o); err != nil || o == nil {
		return nil, false
	}
	return o, true
}

// text is a member as text: a string unquoted, anything else (a number) as
// written; "" when absent or null.
func (o object) text(name string) string {
	v := bytes.TrimSpace(o[name])
	if len(v) == 0 || bytes.Equal(v, []byte("null")) {
		return ""
	}
	if v[0] == '"' {
		var s string
		if json.Unmarshal(v, &s) == nil {
			return s
		}
		return ""
	}
	return string(v)
}
