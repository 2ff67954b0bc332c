package daraja

// The STK push and the STK query: their requests, answers and checks.

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// PushRequest is one STK push: prompt Phone to pay Amount.
type PushRequest struct {
	Phone            string // 254XXXXXXXXX: 12 digits, 2547… or 2541…
	Amount           int64  // whole shillings, MinAmount…MaxAmount
	AccountReference string // 1–12 characters, shown to the customer
	TransactionDesc  string // optional; cut to 13 characters; default DefaultTransactionDesc
	CallbackURL      string // absolute http(s) URL with a lowercase host
	// SendBy, when set, is the latest the push may leave (wall clock): a
	// push that waits past it (for a slot under MaxRPS, for a token, for a
	// new token after a refused one, for its connection) is not sent, and
	// Push returns an *Error matching ErrSendByPassed.
	SendBy time.Time
}

// PushResponse is Daraja's acceptance of a push. The outcome comes later,
// in the callback or from Query.
type PushResponse struct {
	MerchantRequestID   string
	CheckoutRequestID   string
	ResponseCode        string
	ResponseDescription string
	CustomerMessage     string
}

// QueryResult is Daraja's answer to an STK query. ResultCode is always a
// string ("0", "1032", …); decide on it, not on ResultDesc.
type QueryResult struct {
	ResponseCode        string
	ResponseDescription string
	MerchantRequestID   string
	CheckoutRequestID   string
	ResultCode          string
	ResultDesc          string
}

// pushBody is the push request as Daraja documents it, in its field order.
type pushBody struct {
	BusinessShortCode string
	Password          string
	Timestamp         string
	TransactionType   string
	Amount            int64
	PartyA            string
	PartyB            string
	PhoneNumber       string
	CallBackURL       string
	AccountReference  string
	TransactionDesc   string
}

type queryBody struct {
	BusinessShortCode string
	Password          string
	Timestamp         string
	CheckoutRequestID string
}

// Push asks Daraja to prompt the customer. It checks req first and refuses
// (KindRefused, CodeInvalidRequest) what Daraja would refuse, without
// calling it. A nil error means Daraja accepted the push (ResponseCode "0").
// Push never sends the push twice, except once after Daraja refused the
// access token.
func (c *Client) Push(ctx context.Context, req PushRequest) (PushResponse, error) {
	if err := checkPush(&req); err != nil {
		return PushResponse{}, err
	}
	build := func() ([]byte, error) {
		ts := Timestamp(c.now())
		return marshal(pushBody{
			BusinessShortCode: c.cfg.ShortCode,
			Password:          Password(c.cfg.ShortCode, c.cfg.PassKey, ts),
			Timestamp:         ts,
			TransactionType:   c.cfg.TransactionType,
			Amount:            req.Amount,
			PartyA:            req.Phone,
			PartyB:            c.cfg.PartyB,
			PhoneNumber:       req.Phone,
			CallBackURL:       req.CallbackURL,
			AccountReference:  req.AccountReference,
			TransactionDesc:   req.TransactionDesc,
		})
	}
	var resp PushResponse
	err := c.call(ctx, opPush, PathPush, req.SendBy, build, func(status int, h http.Header, body []byte) error {
		var err error
		resp, err = decodePush(status, h, body)
		return err
	})
	return resp, err
}

// Query asks Daraja for the outcome of a push. A nil error means the
// outcome is final: ResultCode says which. While the customer has not
// answered, the error matches ErrStillProcessing (the result is filled when
// Daraja answered with ResultCode 4999); for an id Daraja does not know, it
// matches ErrUnknownTransaction. Queries may be repeated freely.
func (c *Client) Query(ctx context.Context, checkoutRequestID string) (QueryResult, error) {
	if checkoutRequestID == "" || strings.ContainsFunc(checkoutRequestID, unicode.IsControl) {
		return QueryResult{}, invalid(opQuery, "CheckoutRequestID is empty or malformed")
	}
	build := func() ([]byte, error) {
		ts := Timestamp(c.now())
		return marshal(queryBody{
			BusinessShortCode: c.cfg.ShortCode,
			Password:          Password(c.cfg.ShortCode, c.cfg.PassKey, ts),
			Timestamp:         ts,
			CheckoutRequestID: checkoutRequestID,
		})
	}
	var res QueryResult
	err := c.call(ctx, opQuery, PathQuery, time.Time{}, build, func(status int, h http.Header, body []byte) error {
		var err error
		res, err = decodeQuery(status, h, body)
		return err
	})
	return res, err
}

// checkPush refuses what Daraja refuses, and fills TransactionDesc.
func checkPush(r *PushRequest) error {
	if !isDigits(r.Phone, 12, 12) || !(strings.HasPrefix(r.Phone, "2547") || strings.HasPrefix(r.Phone, "2541")) {
		return invalid(opPush, "Invalid PhoneNumber: want 12 digits 2547XXXXXXXX or 2541XXXXXXXX")
	}
	if r.Amount < MinAmount || r.Amount > MaxAmount {
		return invalid(opPush, "Invalid Amount: want a whole number from %d to %d, got %d", MinAmount, MaxAmount, r.Amount)
	}
	if n := utf8.RuneCountInString(r.AccountReference); n < 1 || n > MaxAccountReference ||
		!utf8.ValidString(r.AccountReference) || strings.ContainsFunc(r.AccountReference, unicode.IsControl) ||
		strings.TrimSpace(r.AccountReference) == "" {
		return invalid(opPush, "Invalid AccountReference: want 1 to %d printable characters", MaxAccountReference)
	}
	desc := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(r.TransactionDesc, ""))
	desc = strings.TrimSpace(desc)
	if utf8.RuneCountInString(desc) > MaxTransactionDesc {
		desc = strings.TrimSpace(string([]rune(desc)[:MaxTransactionDesc]))
	}
	if desc == "" {
		desc = DefaultTransactionDesc
	}
	r.TransactionDesc = desc
	if err := checkCallbackURL(r.CallbackURL); err != nil {
		return invalid(opPush, "Invalid CallBackURL: %s", err)
	}
	return nil
}

func checkCallbackURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Opaque != "":
		return errors.New("want an absolute http(s) URL")
	case u.User != nil:
		return errors.New("must not carry credentials")
	case u.Fragment != "":
		return errors.New("must not have a fragment")
	case u.Host != strings.ToLower(u.Host):
		// Daraja has refused CallBackURLs with an uppercase host.
		return errors.New("the host must be lowercase")
	case strings.Contains(strings.ToLower(s), "mpesa"):
		// Daraja is reported to refuse URLs naming M-Pesa.
		return errors.New(`must not contain "mpesa"`)
	case strings.ContainsAny(s, " \t\r\n"):
		return errors.New("must not contain white space")
	}
	return nil
}
