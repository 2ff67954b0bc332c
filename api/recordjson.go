package api

import (
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stkgate/stkgate/api/store"
)

// The poll's answer is written by hand: encoding/json walked RecordView's
// fields by reflection on every poll (6% of a poll's CPU, a tenth of its
// allocations). The bytes are encoding/json's, as echo's c.JSON sent
// them: compact, HTML-escaped, and a newline; TestRecordJSONMatches and
// FuzzRecordBody (api/fuzz) hold the two together, and fail when a field is added to
// RecordView without being written here.

// recordOfJSON answers code with recordBody{Success: true, Data:
// ViewOf(*r)}, the bytes c.JSON would send, written from r itself (the
// view's nullable fields, amount and timestamps were eight allocations a
// poll; TestRecordOfMatchesView and FuzzRecordOf hold appendRecordOf to
// AppendRecordBody of the view). ?pretty (echo's indented answer) goes to
// c.JSON as before; a request without a query is not parsed for one.
func recordOfJSON(c echo.Context, code int, r *store.Record) error {
	if c.Request().URL.RawQuery != "" {
		if _, pretty := c.QueryParams()["pretty"]; pretty {
			return c.JSON(code, recordBody{Success: true, Data: ViewOf(*r)})
		}
	}
	buf := recordBufs.Get().(*[]byte)
	defer recordBufs.Put(buf)
	*buf = appendRecordOf((*buf)[:0], r)
	return c.Blob(code, echo.MIMEApplicationJSON, *buf)
}

// appendRecordOf is AppendRecordBody(b, &ViewOf(*r)), field for field.
func appendRecordOf(b []byte, r *store.Record) []byte {
	b = append(b, `{"success":true,"data":{"id":`...)
	b = strconv.AppendInt(b, r.ID, 10)
	b = append(b, `,"tracking_id":`...)
	b = appendJSONString(b, r.TrackingID)
	b = append(b, `,"phone_number":`...)
	b = appendJSONString(b, r.PhoneNumber)
	b = append(b, `,"amount":"`...)
	b = strconv.AppendInt(b, r.Amount, 10)
	b = append(b, `","reference":`...)
	b = appendJSONString(b, r.Reference)
	b = append(b, `,"tag":`...)
	b = appendJSONOrNull(b, r.Tag)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, `,"status_label":`...)
	b = appendJSONString(b, r.StatusLabel)
	b = append(b, `,"response_code":`...)
	b = appendJSONOrNull(b, r.ResponseCode)
	b = append(b, `,"response_description":`...)
	b = appendJSONOrNull(b, r.ResponseDescription)
	b = append(b, `,"transaction_code":`...)
	b = appendJSONOrNull(b, r.TransactionCode)
	b = append(b, `,"merchant_request_id":`...)
	b = appendJSONOrNull(b, r.MerchantRequestID)
	b = append(b, `,"checkout_request_id":`...)
	b = appendJSONOrNull(b, r.CheckoutRequestID)
	b = append(b, `,"meta":{"transaction_date":`...)
	b = appendJSONOrNull(b, r.TransactionDate)
	b = append(b, `,"late_result":`...)
	if l := r.LateResult; l == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"response_code":`...)
		b = appendJSONString(b, l.ResponseCode)
		b = append(b, `,"response_description":`...)
		b = appendJSONOrNull(b, l.ResponseDescription)
		b = append(b, `,"status_label":`...)
		b = appendJSONString(b, l.StatusLabel)
		b = append(b, `,"transaction_code":`...)
		b = appendJSONOrNull(b, l.TransactionCode)
		b = append(b, `,"transaction_date":`...)
		b = appendJSONOrNull(b, l.TransactionDate)
		b = append(b, `,"merchant_request_id":`...)
		b = appendJSONOrNull(b, l.MerchantRequestID)
		b = append(b, `,"checkout_request_id":`...)
		b = appendJSONOrNull(b, l.CheckoutRequestID)
		b = append(b, `,"source":`...)
		b = appendJSONOrNull(b, l.Source)
		b = append(b, `,"learnt_at":`...)
		b = appendTimestamp(b, l.LearntAt)
		b = append(b, '}')
	}
	b = append(b, `},"created_at":`...)
	b = appendTimestamp(b, r.CreatedAt)
	b = append(b, `,"updated_at":`...)
	b = appendTimestamp(b, r.UpdatedAt)
	return append(b, "}}\n"...)
}

// appendJSONOrNull is appendJSONNullable(b, nullable(s)).
func appendJSONOrNull(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendJSONString(b, s)
}

// appendTimestamp is appendJSONString(b, timestamp(t)): RFC 3339's
// digits, dashes, colons, T and Z need no escape.
func appendTimestamp(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().Truncate(time.Second).AppendFormat(b, time.RFC3339)
	return append(b, '"')
}

var recordBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// AppendRecordBody appends the answer of a poll of v, {"success":true,
// "data":v}, exactly as json.Encoder.Encode writes it. Exported for the
// fuzz target (api/fuzz).
func AppendRecordBody(b []byte, v *RecordView) []byte {
	b = append(b, `{"success":true,"data":{"id":`...)
	b = strconv.AppendInt(b, v.ID, 10)
	b = append(b, `,"tracking_id":`...)
	b = appendJSONString(b, v.TrackingID)
	b = append(b, `,"phone_number":`...)
	b = appendJSONString(b, v.PhoneNumber)
	b = append(b, `,"amount":`...)
	b = appendJSONString(b, v.Amount)
	b = append(b, `,"reference":`...)
	b = appendJSONString(b, v.Reference)
	b = append(b, `,"tag":`...)
	b = appendJSONNullable(b, v.Tag)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(v.Status), 10)
	b = append(b, `,"status_label":`...)
	b = appendJSONString(b, v.StatusLabel)
	b = append(b, `,"response_code":`...)
	b = appendJSONNullable(b, v.ResponseCode)
	b = append(b, `,"response_description":`...)
	b = appendJSONNullable(b, v.ResponseDescription)
	b = append(b, `,"transaction_code":`...)
	b = appendJSONNullable(b, v.TransactionCode)
	b = append(b, `,"merchant_request_id":`...)
	b = appendJSONNullable(b, v.MerchantRequestID)
	b = append(b, `,"checkout_request_id":`...)
	b = appendJSONNullable(b, v.CheckoutRequestID)
	b = append(b, `,"meta":{"transaction_date":`...)
	b = appendJSONNullable(b, v.Meta.TransactionDate)
	b = append(b, `,"late_result":`...)
	if l := v.Meta.LateResult; l == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"response_code":`...)
		b = appendJSONString(b, l.ResponseCode)
		b = append(b, `,"response_description":`...)
		b = appendJSONNullable(b, l.ResponseDescription)
		b = append(b, `,"status_label":`...)
		b = appendJSONString(b, l.StatusLabel)
		b = append(b, `,"transaction_code":`...)
		b = appendJSONNullable(b, l.TransactionCode)
		b = append(b, `,"transaction_date":`...)
		b = appendJSONNullable(b, l.TransactionDate)
		b = append(b, `,"merchant_request_id":`...)
		b = appendJSONNullable(b, l.MerchantRequestID)
		b = append(b, `,"checkout_request_id":`...)
		b = appendJSONNullable(b, l.CheckoutRequestID)
		b = append(b, `,"source":`...)
		b = appendJSONNullable(b, l.Source)
		b = append(b, `,"learnt_at":`...)
		b = appendJSONString(b, l.LearntAt)
		b = append(b, '}')
	}
	b = append(b, `},"created_at":`...)
	b = appendJSONString(b, v.CreatedAt)
	b = append(b, `,"updated_at":`...)
	b = appendJSONString(b, v.UpdatedAt)
	return append(b, "}}\n"...)
}

func appendJSONNullable(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendJSONString(b, *s)
}

// appendJSONString appends s as a JSON string. A string of printable ASCII
// that encoding/json leaves as it is (no '"', '\\', '<', '>' or '&': it
// escapes the last three too) is copied; any other goes through
// encoding/json itself, so that its escapes (controls, invalid UTF-8,
// U+2028 and U+2029) stay exactly encoding/json's.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(s)
			if err != nil {
				// A string always marshals; keep the answer well formed.
				return append(b, `""`...)
			}
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
