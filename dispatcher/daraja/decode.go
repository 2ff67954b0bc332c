package daraja

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/stkgate/stkgate/events"
)

// The calls, as Error.Op names them; they read the same answer differently.
const (
	opOAuth = "oauth"
	opPush  = "push"
	opQuery = "query"
)

// defaultTokenTTL is assumed when the OAuth answer has no expires_in.
const defaultTokenTTL = 3599 * time.Second

// flexString takes a JSON string or number as its text: Daraja writes the
// same field either way depending on the endpoint, the day and the SDK.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*f = ""
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return errors.New("want a string or a number")
		}
		*f = flexString(n)
	}
	return nil
}

// envelope is Daraja's error answer, or the fault JSON of its API gateway.
type envelope struct {
	RequestID    flexString `json:"requestId"`
	ErrorCode    flexString `json:"errorCode"`
	ErrorMessage flexString `json:"errorMessage"`
	Fault        *struct {
		FaultString flexString `json:"faultstring"`
		Detail      struct {
			ErrorCode flexString `json:"errorcode"`
		} `json:"detail"`
	} `json:"fault"`
}

type tokenWire struct {
	AccessToken flexString `json:"access_token"`
	ExpiresIn   flexString `json:"expires_in"`
}

type pushWire struct {
	MerchantRequestID   flexString
	CheckoutRequestID   flexString
	ResponseCode        flexString
	ResponseDescription flexString
	CustomerMessage     flexString
}

type queryWire struct {
	ResponseCode        flexString
	ResponseDescription flexString
	MerchantRequestID   flexString
	CheckoutRequestID   flexString
	ResultCode          flexString
	ResultDesc          flexString
}

// jsonObject reports whether body is one JSON object, and decodes it into v
// (field names match case-insensitively, unknown fields are ignored).
func jsonObject(body []byte, v any) bool {
	t := bytes.TrimSpace(body)
	if len(t) == 0 || t[0] != '{' {
		return false
	}
	return json.Unmarshal(t, v) == nil
}

// decodeToken reads the OAuth answer.
func decodeToken(status int, h http.Header, body []byte) (string, time.Duration, error) {
	if e := answerError(opOAuth, status, h, body); e != nil {
		return "", 0, e
	}
	var w tokenWire
	if !jsonObject(body, &w) || w.AccessToken == "" {
		return "", 0, badResponse(opOAuth, status, KindTransient, "no access_token in the answer")
	}
	ttl := defaultTokenTTL
	if w.ExpiresIn != "" {
		secs, err := strconv.ParseFloat(strings.TrimSpace(string(w.ExpiresIn)), 64)
		if err != nil || math.IsNaN(secs) || secs <= 0 || secs > 366*24*3600 {
			return "", 0, badResponse(opOAuth, status, KindTransient, "expires_in is not a number of seconds")
		}
		ttl = time.Duration(secs * float64(time.Second))
	}
	return string(w.AccessToken), ttl, nil
}

// decodePush reads the answer to a push. The ids of an accepted push are
// kept exactly; an acceptance whose CheckoutRequestID cannot be kept (not
// a sane id) is ambiguous, as the customer has been prompted.
func decodePush(status int, h http.Header, body []byte) (PushResponse, error) {
	if e := answerError(opPush, status, h, body); e != nil {
		return PushResponse{}, e
	}
	var w pushWire
	if !jsonObject(body, &w) {
		// A 2xx that is not Daraja's answer: the push may well have been
		// accepted, and we do not know its CheckoutRequestID.
		return PushResponse{}, badResponse(opPush, status, KindAmbiguous, "unreadable answer to an accepted request")
	}
	resp := PushResponse{
		MerchantRequestID:   keepID(string(w.MerchantRequestID)),
		CheckoutRequestID:   string(w.CheckoutRequestID),
		ResponseCode:        strings.TrimSpace(string(w.ResponseCode)),
		ResponseDescription: cleanText(string(w.ResponseDescription)),
		CustomerMessage:     cleanText(string(w.CustomerMessage)),
	}
	if readsAsZero(resp.ResponseCode) {
		resp.ResponseCode = "0"
	}
	switch {
	case resp.ResponseCode == "" || !saneID(resp.ResponseCode):
		resp.ResponseCode = ""
		return resp, badResponse(opPush, status, KindAmbiguous, "no ResponseCode in the answer")
	case resp.ResponseCode != "0":
		return resp, (&Error{Op: opPush, HTTPStatus: status, Code: resp.ResponseCode, Message: resp.ResponseDescription, Kind: KindRefused}).tidy()
	case resp.CheckoutRequestID == "":
		return resp, badResponse(opPush, status, KindAmbiguous, "accepted without a CheckoutRequestID")
	case !saneID(resp.CheckoutRequestID):
		resp.CheckoutRequestID = ""
		return resp, badResponse(opPush, status, KindAmbiguous, "accepted with a CheckoutRequestID that is not a sane id")
	}
	return resp, nil
}

// decodeQuery reads the answer to an STK query.
func decodeQuery(status int, h http.Header, body []byte) (QueryResult, error) {
	if e := answerError(opQuery, status, h, body); e != nil {
		return QueryResult{}, e
	}
	var w queryWire
	if !jsonObject(body, &w) {
		return QueryResult{}, badResponse(opQuery, status, KindAmbiguous, "unreadable answer")
	}
	res := QueryResult{
		ResponseCode:        strings.TrimSpace(string(w.ResponseCode)),
		ResponseDescription: cleanText(string(w.ResponseDescription)),
		MerchantRequestID:   keepID(string(w.MerchantRequestID)),
		CheckoutRequestID:   keepID(string(w.CheckoutRequestID)),
		ResultCode:          strings.TrimSpace(string(w.ResultCode)),
		ResultDesc:          cleanText(string(w.ResultDesc)),
	}
	if readsAsZero(res.ResponseCode) {
		res.ResponseCode = "0"
	}
	switch {
	case res.ResponseCode != "" && !saneID(res.ResponseCode):
		res.ResponseCode = ""
		return res, badResponse(opQuery, status, KindAmbiguous, "a ResponseCode that is not a sane code")
	case res.ResponseCode != "" && res.ResponseCode != "0":
		return res, (&Error{Op: opQuery, HTTPStatus: status, Code: res.ResponseCode, Message: res.ResponseDescription, Kind: KindRefused}).tidy()
	case res.ResultCode == "4999":
		return res, (&Error{Op: opQuery, HTTPStatus: status, Code: res.ResultCode, Message: res.ResultDesc,
			Kind: KindTransient, err: ErrStillProcessing}).tidy()
	case res.ResultCode == "" || !saneID(res.ResultCode):
		res.ResultCode = ""
		return res, badResponse(opQuery, status, KindAmbiguous, "no ResultCode in the answer")
	}
	return res, nil
}

// keepID is an id from an answer if it is sane, else "".
func keepID(s string) string {
	if !saneID(s) {
		return ""
	}
	return s
}

// cleanText cleans a description from an answer.
func cleanText(s string) string { return events.CleanText(s, events.MaxTextRunes) }

func badResponse(op string, status int, k Kind, msg string) *Error {
	return (&Error{Op: op, HTTPStatus: status, Code: CodeBadResponse, Message: msg, Kind: k}).tidy()
}

// answerError classifies an answer that is an error: any non-2xx status, or
// a 2xx carrying an error envelope. It returns nil for a 2xx without one,
// which the caller decodes. The error is tidy: an answer without a code of
// its own has the Code "http.<status>".
func answerError(op string, status int, h http.Header, body []byte) *Error {
	e := classifyAnswer(op, status, h, body)
	if e == nil {
		return nil
	}
	e.Uncertain = e.HTTPStatus == http.StatusServiceUnavailable && e.Kind == KindTransient
	return e.tidy()
}

func classifyAnswer(op string, status int, h http.Header, body []byte) *Error {
	var env envelope
	isJSON := jsonObject(body, &env)
	if isJSON && env.ErrorCode != "" {
		return envelopeError(op, status, h, env)
	}
	if status >= 200 && status < 300 {
		return nil
	}
	e := &Error{Op: op, HTTPStatus: status, Message: http.StatusText(status)}
	if e.Message == "" {
		e.Message = "unexpected status"
	}
	if isJSON && env.Fault != nil {
		e.Code = string(env.Fault.Detail.ErrorCode)
		if env.Fault.FaultString != "" {
			e.Message = string(env.Fault.FaultString)
		}
	} else if !isJSON {
		e.Message += " (not a Daraja answer)"
	}
	faultCode := strings.ToLower(e.Code)
	switch {
	case status == http.StatusTooManyRequests, status == http.StatusServiceUnavailable:
		// The gateway turned the request away before Daraja processed it.
		e.Kind = KindTransient
		e.RetryAfter = retryAfter(h, RetryAfterGateway)
	case strings.Contains(faultCode, "invalidaccesstoken") || strings.Contains(faultCode, "access_token_expired") ||
		(status == http.StatusUnauthorized && op != opOAuth):
		tokenRefused(op, e)
	case strings.Contains(faultCode, "spikearrest"), strings.Contains(faultCode, "quotaviolation"):
		// A gateway policy stopped the request before Daraja.
		e.Kind = KindTransient
		e.RetryAfter = retryAfter(h, RetryAfterSpikeArrest)
	case status == http.StatusRequestTimeout:
		// The server gave up waiting for the request: it did not get it whole.
		e.Kind = KindTransient
	case status >= 300 && status < 500:
		e.Kind = KindRefused
	default:
		// 5xx (or an odd status): the request may have been processed. For
		// an OAuth call nothing was pushed, so it is transient there.
		e.Kind = statusKind(op, KindAmbiguous)
	}
	return e
}

// envelopeError classifies Daraja's error envelope per DARAJA.md.
func envelopeError(op string, status int, h http.Header, env envelope) *Error {
	e := &Error{
		Op:         op,
		HTTPStatus: status,
		RequestID:  string(env.RequestID),
		Code:       strings.TrimSpace(string(env.ErrorCode)),
		Message:    string(env.ErrorMessage),
	}
	msg := strings.ToLower(e.Message)
	switch e.Code {
	case CodeInvalidToken, CodeInvalidTokenAlt:
		tokenRefused(op, e)
	case CodeGeneric:
		switch {
		case strings.Contains(msg, "unable to lock subscriber"):
			e.Kind = KindLocked
			e.RetryAfter = retryAfter(h, RetryAfterLocked)
		case strings.Contains(msg, "merchant does not exist"), strings.Contains(msg, "wrong credentials"):
			e.Kind = KindRefused
		case op == opQuery && strings.Contains(msg, "being processed"):
			e.Kind = KindTransient
			e.err = ErrStillProcessing
		case op == opQuery && strings.Contains(msg, "does not exist"):
			e.Kind = KindRefused
			e.err = ErrUnknownTransaction
		default:
			e.Kind = statusKind(op, KindAmbiguous)
		}
	case CodeSpikeArrest:
		e.Kind = KindTransient
		e.RetryAfter = retryAfter(h, RetryAfterSpikeArrest)
	case CodeQuotaViolation:
		e.Kind = KindTransient
		e.RetryAfter = retryAfter(h, RetryAfterQuota)
	case CodeInternal:
		e.Kind = statusKind(op, KindAmbiguous)
	case CodeBadRequest, CodeInvalidCredentials:
		e.Kind = KindRefused
	default:
		switch {
		case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
			e.Kind = KindTransient
			e.RetryAfter = retryAfter(h, RetryAfterGateway)
		case status == http.StatusUnauthorized && op != opOAuth:
			tokenRefused(op, e)
		case status >= 400 && status < 500, strings.HasPrefix(e.Code, "400."):
			e.Kind = KindRefused
		default:
			e.Kind = statusKind(op, KindAmbiguous)
		}
	}
	return e
}

// tokenRefused marks an invalid-token answer: nothing was processed, and the
// client refreshes its token and tries once more. On the OAuth call itself
// it is a refusal of the credentials.
func tokenRefused(op string, e *Error) {
	if op == opOAuth {
		e.Kind = KindRefused
		return
	}
	e.Kind = KindTransient
	e.invalidToken = true
}

// statusKind is k, except on an OAuth call, where nothing can have been
// pushed and a server-side failure is merely transient.
func statusKind(op string, k Kind) Kind {
	if op == opOAuth && k == KindAmbiguous {
		return KindTransient
	}
	return k
}

// retryAfter is the larger of the Retry-After header (seconds or an HTTP
// date) and floor, capped at 10 minutes so a bogus header cannot stall a
// payment for long.
func retryAfter(h http.Header, floor time.Duration) time.Duration {
	const maxWait = 10 * time.Minute
	d := floor
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
			d = max(d, time.Duration(secs)*time.Second)
		} else if t, err := http.ParseTime(v); err == nil {
			d = max(d, time.Until(t))
		}
	}
	return min(d, maxWait)
}
