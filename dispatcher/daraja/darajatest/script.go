package darajatest

import (
	"fmt"
	"strings"
	"time"
)

// Failure is a scripted answer to one push call, standing for a way in
// which Daraja or its gateway fails.
type Failure int

const (
	// FailSpikeArrest: 500 500.003.02 "Spike Arrest Violation". Not processed.
	FailSpikeArrest Failure = iota + 1
	// FailQuota: 500 500.003.03 "Quota Violation". Not processed.
	FailQuota
	// FailServiceUnavailable: 503 with the gateway's HTML page. Not processed.
	FailServiceUnavailable
	// FailTooManyRequests: 429 with the gateway's fault JSON. Not processed.
	FailTooManyRequests
	// FailInternal500_003_1001: 500 500.003.1001 "Internal Server Error",
	// without processing the push.
	FailInternal500_003_1001
	// FailInvalidToken: 404 404.001.03 "Invalid Access Token". Not processed.
	FailInvalidToken
	// FailTimeout: reads the request and never answers (until the client
	// gives up or the server closes). Not processed.
	FailTimeout
	// FailResetAfterRead: reads the request, then resets the connection
	// without answering. Not processed.
	FailResetAfterRead
	// FailInvalidPhone: 400 400.002.02 "Bad Request - Invalid PhoneNumber".
	FailInvalidPhone
	// FailMerchantNotExist: 500 500.001.1001 "Merchant does not exist".
	FailMerchantNotExist
	// FailWrongCredentials: 500 500.001.1001 "Wrong credentials".
	FailWrongCredentials
	// FailLocked: 500 500.001.1001 "Unable to lock subscriber…".
	FailLocked
	// FailTimeoutAfterAccept: processes the push (the customer is prompted,
	// the callback will come) but never answers: the ambiguous case.
	FailTimeoutAfterAccept
	// FailResetAfterAccept: processes the push, then resets the connection.
	FailResetAfterAccept
	// FailInternalAfterAccept: processes the push, then answers 500
	// 500.003.1001.
	FailInternalAfterAccept
	// FailHTML404: 404 with the HTML page of a proxy in front of Daraja,
	// no error envelope. Not processed.
	FailHTML404
	// FailHTML403: 403 with a web application firewall's HTML page. Not
	// processed.
	FailHTML403
	// FailUnauthorizedEmpty: 401 with an empty body. Not processed.
	FailUnauthorizedEmpty
	// FailNULMessage: 400 400.002.02 whose errorMessage holds a NUL byte
	// (and other control characters), as no database takes it. Not
	// processed.
	FailNULMessage
	// FailServiceUnavailableAfterAccept: processes the push (the customer
	// is prompted, the callback will come), then answers 503 with the
	// gateway's HTML page, which usually means "not processed".
	FailServiceUnavailableAfterAccept
)

var failureNames = map[Failure]string{
	FailSpikeArrest:          "spike-arrest",
	FailQuota:                "quota",
	FailServiceUnavailable:   "service-unavailable",
	FailTooManyRequests:      "too-many-requests",
	FailInternal500_003_1001: "internal-500.003.1001",
	FailInvalidToken:         "invalid-token",
	FailTimeout:              "timeout",
	FailResetAfterRead:       "reset-after-read",
	FailInvalidPhone:         "invalid-phone",
	FailMerchantNotExist:     "merchant-does-not-exist",
	FailWrongCredentials:     "wrong-credentials",
	FailLocked:               "locked",
	FailTimeoutAfterAccept:   "timeout-after-accept",
	FailResetAfterAccept:     "reset-after-accept",
	FailInternalAfterAccept:  "internal-after-accept",

	FailHTML404:                       "html-404",
	FailHTML403:                       "html-403",
	FailUnauthorizedEmpty:             "unauthorized-empty",
	FailNULMessage:                    "nul-message",
	FailServiceUnavailableAfterAccept: "service-unavailable-after-accept",
}

func (f Failure) String() string {
	if n, ok := failureNames[f]; ok {
		return n
	}
	if f == 0 {
		return "none"
	}
	return fmt.Sprintf("Failure(%d)", int(f))
}

// ParseFailure reads a Failure's String form (for a simulator's settings).
func ParseFailure(s string) (Failure, error) {
	for f, n := range failureNames {
		if strings.EqualFold(n, strings.TrimSpace(s)) {
			return f, nil
		}
	}
	return 0, fmt.Errorf("darajatest: unknown failure %q", s)
}

// afterAccept reports whether the push is processed before the failure.
func (f Failure) afterAccept() bool {
	return f == FailTimeoutAfterAccept || f == FailResetAfterAccept || f == FailInternalAfterAccept ||
		f == FailServiceUnavailableAfterAccept
}

// Script sets what happens to the pushes to one phone.
type Script struct {
	// ResultCode is the outcome of every accepted push ("0", "1032",
	// "SFC_IC0003", …); "" means the default of OutcomeFor.
	ResultCode string
	// ResultDesc goes with ResultCode; "" means the usual description.
	ResultDesc string
	// FailFirst answers the next len(FailFirst) push calls for the phone, in
	// order, before any push is processed normally. A call refused for a
	// missing token or content type does not use one.
	FailFirst []Failure
	// NoCallback makes outcomes final (for Query and the lock) without
	// sending the callback: a lost callback.
	NoCallback bool
	// CallbackDelay overrides Options.CallbackDelay for the phone; negative
	// means at once.
	CallbackDelay time.Duration
}

type scriptState struct {
	Script
	next int // index in FailFirst of the next failure to answer
}

// Script sets the script of phone (254XXXXXXXXX), replacing any previous
// one; its FailFirst starts from the beginning.
func (s *Server) Script(phone string, sc Script) {
	sc.FailFirst = append([]Failure(nil), sc.FailFirst...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[phone] = &scriptState{Script: sc}
}

// nextFailureLocked takes the phone's next scripted failure, if any.
func (s *Server) nextFailureLocked(phone string) Failure {
	st := s.scripts[phone]
	if st == nil || st.next >= len(st.FailFirst) {
		return 0
	}
	f := st.FailFirst[st.next]
	st.next++
	return f
}

// Result descriptions the fake uses, as Daraja's callbacks word them.
var resultDescs = map[string]string{
	"0":          "The service request is processed successfully.",
	"1":          "The balance is insufficient for the transaction.",
	"2":          "Declined due to limit rule: less than the minimum transaction amount.",
	"3":          "Declined due to limit rule: greater than the maximum transaction amount.",
	"4":          "Declined due to limit rule: would exceed daily transfer limit.",
	"8":          "Declined due to limit rule: would exceed the maximum balance.",
	"17":         "Rule limited.",
	"26":         "System busy. The service request is rejected.",
	"1001":       "Unable to lock subscriber, a transaction is already in process for the current subscriber",
	"1019":       "Transaction has expired",
	"1025":       "An error occurred while sending a push request",
	"1032":       "Request cancelled by user",
	"1036":       "[STK_CB - ]SMSC ACK timeout.",
	"1037":       "DS timeout user cannot be reached",
	"2001":       "The initiator information is invalid.",
	"2028":       "The request is not permitted according to product assignment",
	"8006":       "The security credential is locked",
	"9999":       "The transaction failed.",
	"SFC_IC0003": "Operator does not exist",
}

// OutcomeFor is the default outcome of a push to phone, chosen by its last
// four digits: 1032 (cancelled), 0001 (1, insufficient balance), 1037
// (cannot be reached), 1019 (expired), 2001 (wrong PIN); any other phone
// pays (0).
func OutcomeFor(phone string) (resultCode, resultDesc string) {
	code := "0"
	if len(phone) >= 4 {
		switch phone[len(phone)-4:] {
		case "1032":
			code = "1032"
		case "0001":
			code = "1"
		case "1037":
			code = "1037"
		case "1019":
			code = "1019"
		case "2001":
			code = "2001"
		}
	}
	return code, resultDescs[code]
}
