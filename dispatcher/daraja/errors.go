package daraja

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/stkgate/stkgate/events"
)

// Kind is what an error means for the push that failed: whether it may be
// sent again. Queries are idempotent, so for Query only KindRefused (do not
// ask again) and ErrStillProcessing (ask later) matter.
type Kind int

const (
	// KindRefused is final: Daraja (or the client's own validation) refused
	// the request and sending it again would be refused again.
	KindRefused Kind = iota
	// KindTransient means the request did not reach Daraja's processing (it
	// was never fully sent, or a gateway turned it away): back off and retry.
	KindTransient
	// KindLocked is Daraja's "Unable to lock subscriber": the phone has a
	// prompt open. Nothing was sent; retry after the open prompt has ended
	// (RetryAfter, at least a minute).
	KindLocked
	// KindAmbiguous means the push may have reached the customer (a timeout
	// or a lost connection after the request was written, an internal error,
	// an unreadable success answer). Never send that push again: a second
	// push is a second prompt and possibly a second payment. Only the STK
	// query or the callback can tell what happened.
	KindAmbiguous
	// KindCanceled means the caller's context was canceled: the call was
	// abandoned, which is no verdict of Daraja. Error.RequestSent tells
	// whether the request had been written; if it had, the push must be
	// treated as KindAmbiguous. A caller's deadline is not a cancellation: it
	// is a timeout, classified like any other (KindTransient before the
	// request was written, KindAmbiguous after).
	KindCanceled
)

func (k Kind) String() string {
	switch k {
	case KindRefused:
		return "refused"
	case KindTransient:
		return "transient"
	case KindLocked:
		return "locked"
	case KindAmbiguous:
		return "ambiguous"
	case KindCanceled:
		return "canceled"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Sentinels for the query outcomes a caller branches on. Query's errors
// match them with errors.Is.
var (
	// ErrStillProcessing: the customer has not answered yet (ResultCode 4999,
	// or 500.001.1001 "The transaction is being processed"). Ask again later.
	ErrStillProcessing = errors.New("daraja: transaction still being processed")
	// ErrUnknownTransaction: Daraja does not know the CheckoutRequestID
	// (500.001.1001 "The transaction does not Exist").
	ErrUnknownTransaction = errors.New("daraja: transaction does not exist")
	// ErrSendByPassed: a push was not sent, because it could not leave by
	// its PushRequest.SendBy.
	ErrSendByPassed = errors.New("daraja: not sent by its send-by time")
)

// Synthetic codes that Error.Code carries when Daraja gave no errorCode of
// its own. An answer without one (an HTML or empty page of a proxy,
// firewall or gateway in front of Daraja) has the Code CodeHTTPPrefix +
// its status: "http.404". No synthetic code reads as Daraja's "0".
const (
	// CodeHTTPPrefix begins the Code of an answer that carried no code of
	// its own (or one that cannot be kept: see Error.Code).
	CodeHTTPPrefix = "http."
	// CodeInvalidRequest: the client refused the request before sending it.
	CodeInvalidRequest = "stkgate.invalid_request"
	// CodeUnreachable: the request was not (fully) sent: connection refused,
	// DNS failure, TLS handshake failure, a timeout before writing.
	CodeUnreachable = "stkgate.unreachable"
	// CodeTimeout: no answer in time after the request was written.
	CodeTimeout = "stkgate.timeout"
	// CodeConnectionLost: the connection broke after the request was written.
	CodeConnectionLost = "stkgate.connection_lost"
	// CodeCanceled: the caller canceled the call.
	CodeCanceled = "stkgate.canceled"
	// CodeBadResponse: an answer the client could not read as Daraja's.
	CodeBadResponse = "stkgate.bad_response"
	// CodeSendByPassed: the request was not sent, its send-by time having
	// passed first (PushRequest.SendBy).
	CodeSendByPassed = "stkgate.send_by_passed"
)

// Daraja's error codes the client tells apart.
const (
	CodeBadRequest         = "400.002.02"   // "Bad Request - Invalid <Field>"
	CodeInvalidCredentials = "400.008.01"   // OAuth: wrong consumer key or secret
	CodeInvalidToken       = "404.001.03"   // invalid access token
	CodeInvalidTokenAlt    = "401.002.01"   // invalid access token, other form
	CodeGeneric            = "500.001.1001" // lock, credentials, query states: read the message
	CodeSpikeArrest        = "500.003.02"
	CodeQuotaViolation     = "500.003.03"
	CodeInternal           = "500.003.1001"
)

// The least waits before retrying that the client advises in
// Error.RetryAfter (a Retry-After header asking for more wins).
const (
	RetryAfterSpikeArrest = 2 * time.Second
	RetryAfterQuota       = time.Minute
	RetryAfterLocked      = time.Minute
	RetryAfterGateway     = 5 * time.Second // 429 and 503 without Retry-After
)

// Error is every error the client returns. Its message never holds the
// consumer secret, passkey, password or token.
type Error struct {
	HTTPStatus int    // 0 when no answer was received
	RequestID  string // Daraja's requestId, when it sent one that is a sane id (see MaxIDLen)
	// Code is never empty: Daraja's errorCode (or ResponseCode), else
	// CodeHTTPPrefix + the status of an answer without one, else a Code*
	// constant above. A code Daraja sent that is not a sane id, or that
	// reads as zero (success), is replaced as if it had been absent, so an
	// error never carries a success code.
	Code string
	// Message is Daraja's errorMessage (or ResponseDescription), or the
	// client's reason, cleaned by events.CleanText: no NUL or other control
	// character, valid UTF-8, at most events.MaxTextRunes runes.
	Message    string
	Kind       Kind
	RetryAfter time.Duration // the least wait advised before a retry; 0 for none
	// Uncertain is true when the answer said "not processed" without
	// guaranteeing it: the gateway's 503 (Kind KindTransient). The push may
	// have reached the customer all the same, so an "Unable to lock
	// subscriber" after it may be this push's own prompt. It is false for
	// a push that failed getting its token: that push was never sent.
	Uncertain bool

	// Op is the call that failed: "oauth", "push" or "query".
	Op string
	// RequestSent reports whether the request had been fully written when
	// the call failed without an answer (false for an answer received).
	RequestSent bool

	err          error // the cause: a transport error, ctx error or sentinel
	invalidToken bool  // Daraja refused the access token
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("daraja ")
	b.WriteString(e.Op)
	b.WriteString(" (")
	b.WriteString(e.Kind.String())
	b.WriteString("):")
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, " HTTP %d", e.HTTPStatus)
	}
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (requestId %s)", e.RequestID)
	}
	if cause := rootCause(e); cause != nil && e.HTTPStatus == 0 && !isSentinel(cause) {
		b.WriteString(": ")
		b.WriteString(cause.Error())
	}
	return b.String()
}

// rootCause is the first cause in e's chain that is not an *Error: the
// *Errors on the way have already put their text into e.Message.
func rootCause(e *Error) error {
	for {
		next, ok := e.err.(*Error)
		if !ok {
			return e.err
		}
		e = next
	}
}

// Unwrap gives the cause: ErrStillProcessing, ErrUnknownTransaction,
// context.Canceled, a *url.Error, or another *Error (a token failure).
func (e *Error) Unwrap() error { return e.err }

func isSentinel(err error) bool {
	return err == ErrStillProcessing || err == ErrUnknownTransaction
}

// KindOf tells what err means for a push. For an *Error (anywhere in the
// chain) it is its Kind. For other errors, such as those of an http.Client
// used directly: a context cancellation is KindCanceled; a failure to
// connect (dial, DNS, TLS handshake) is KindTransient; anything else,
// including nil and a bare deadline, is KindAmbiguous, the reading that
// never prompts a customer twice.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	switch {
	case err == nil:
		return KindAmbiguous
	case errors.Is(err, context.Canceled):
		return KindCanceled
	case beforeSending(err):
		return KindTransient
	}
	return KindAmbiguous
}

// beforeSending reports whether err certainly happened before any byte of
// the request could reach the server.
func beforeSending(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var (
		recErr   tls.RecordHeaderError
		alertErr tls.AlertError
		verErr   *tls.CertificateVerificationError
		authErr  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		certErr  x509.CertificateInvalidError
	)
	return errors.As(err, &recErr) || errors.As(err, &alertErr) || errors.As(err, &verErr) ||
		errors.As(err, &authErr) || errors.As(err, &hostErr) || errors.As(err, &certErr)
}

// transportError classifies a failed round trip. parent is the caller's
// context (before the client added its own timeout); sent says whether the
// request had been fully written.
// sendByPassed is the error of a request not sent by its send-by time.
func sendByPassed(op string) *Error {
	return &Error{Op: op, Kind: KindTransient, Code: CodeSendByPassed,
		Message: "not sent: its send-by time passed first", err: ErrSendByPassed}
}

func transportError(parent context.Context, op string, err error, sent bool) *Error {
	e := &Error{Op: op, RequestSent: sent, err: err}
	var netErr net.Error
	timeout := errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout())
	switch {
	case errors.Is(parent.Err(), context.Canceled):
		e.Kind, e.Code = KindCanceled, CodeCanceled
		e.Message = "canceled by the caller"
		if sent {
			e.Message += " after the request was sent: it may have been processed"
		}
	case !sent:
		e.Kind, e.Code = KindTransient, CodeUnreachable
		e.Message = "the request was not sent"
	case timeout:
		e.Kind, e.Code = KindAmbiguous, CodeTimeout
		e.Message = "no answer in time after the request was sent"
	default:
		e.Kind, e.Code = KindAmbiguous, CodeConnectionLost
		e.Message = "connection lost after the request was sent"
	}
	return e
}

// MaxIDLen is the longest id (RequestID, MerchantRequestID,
// CheckoutRequestID) or code the client keeps from an answer, in bytes.
const MaxIDLen = 128

// saneID reports whether s can be kept exactly as an id or code from an
// answer: 1 to MaxIDLen bytes of printable ASCII (space included).
func saneID(s string) bool {
	if s == "" || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// readsAsZero reports whether code would read as success ("0", "00",
// "0.0", …) to whoever compares numbers.
func readsAsZero(code string) bool {
	f, err := strconv.ParseFloat(strings.TrimSpace(code), 64)
	return err == nil && f == 0
}

// tidy makes an error built from an answer safe to carry in events and
// store: a non-empty Code that does not read as success, a clean Message
// and a RequestID only when it is sane. It returns e.
func (e *Error) tidy() *Error {
	e.Code = strings.TrimSpace(e.Code)
	if !saneID(e.Code) || readsAsZero(e.Code) {
		e.Code = ""
	}
	if e.Code == "" {
		if e.HTTPStatus != 0 {
			e.Code = CodeHTTPPrefix + strconv.Itoa(e.HTTPStatus)
		} else {
			e.Code = CodeBadResponse
		}
	}
	if !saneID(e.RequestID) {
		e.RequestID = ""
	}
	e.Message = events.CleanText(e.Message, events.MaxTextRunes)
	return e
}

// invalid is the client's own refusal of a request, before sending it.
func invalid(op, format string, args ...any) *Error {
	return &Error{Op: op, Kind: KindRefused, Code: CodeInvalidRequest, Message: fmt.Sprintf(format, args...)}
}
