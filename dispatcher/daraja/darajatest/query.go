package darajatest

import (
	"mime"
	"net/http"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
)

// Query is one STK query the server received.
type Query struct {
	At                time.Time
	CheckoutRequestID string
	HTTPStatus        int
	ResultCode        string // of a 200 answer: the outcome, or "4999"
	ErrorCode         string // of an error envelope answered
	ErrorMessage      string
}

// queryAnswer is Daraja's 200 answer to a query, in its field order.
type queryAnswer struct {
	ResponseCode        string
	ResponseDescription string
	MerchantRequestID   string
	CheckoutRequestID   string
	ResultCode          string
	ResultDesc          string
}

const queryAccepted = "The service request has been accepted successsfully" // sic

func (s *Server) handleQuery(w http.ResponseWriter, r *http.Request) {
	raw, readErr := readBody(r)
	rec := Query{At: time.Now()}
	defer func() { s.recordQuery(rec) }()
	answer := func(status int, env envelope) {
		rec.HTTPStatus, rec.ErrorCode, rec.ErrorMessage = status, env.ErrorCode, env.ErrorMessage
		writeJSON(w, status, env)
	}
	if !s.authorized(w, r) {
		rec.HTTPStatus, rec.ErrorCode = http.StatusNotFound, daraja.CodeInvalidToken
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		answer(http.StatusBadRequest, badRequest("BusinessShortCode"))
		return
	}
	fields, ok := parseObject(raw)
	if readErr != nil || !ok {
		answer(http.StatusBadRequest, badRequest("JSON"))
		return
	}
	rec.CheckoutRequestID = fields.text("CheckoutRequestID")
	if st, env, refused := s.checkCredentials(fields.text("BusinessShortCode"), fields.text("Timestamp"), fields.text("Password")); refused {
		answer(st, env)
		return
	}
	if rec.CheckoutRequestID == "" {
		answer(http.StatusBadRequest, badRequest("CheckoutRequestID"))
		return
	}

	s.mu.Lock()
	t := s.txns[rec.CheckoutRequestID]
	var a queryAnswer
	processing500 := false
	if t != nil {
		a = queryAnswer{ResponseCode: "0", ResponseDescription: queryAccepted, MerchantRequestID: t.merchantID, CheckoutRequestID: t.checkoutID}
		if t.final {
			a.ResultCode, a.ResultDesc = t.resultCode, t.resultDesc
		} else {
			// Daraja answers an open transaction in two ways; alternate so
			// that a client meets both.
			t.queries++
			processing500 = t.queries%2 == 1
			a.ResultCode, a.ResultDesc = "4999", "The transaction is still under processing"
		}
	}
	s.mu.Unlock()

	switch {
	case t == nil:
		answer(http.StatusInternalServerError, envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeGeneric, ErrorMessage: "The transaction does not Exist"})
	case processing500:
		answer(http.StatusInternalServerError, envelope{RequestID: t.checkoutID, ErrorCode: daraja.CodeGeneric, ErrorMessage: "The transaction is being processed"})
	default:
		rec.HTTPStatus, rec.ResultCode = http.StatusOK, a.ResultCode
		writeJSON(w, http.StatusOK, a)
	}
}
