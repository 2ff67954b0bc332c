package api

import (
	"strconv"
	"time"

	"github.com/stkgate/stkgate/api/store"
)

// RecordView is a record as clients see it (DESIGN.md "The record"): the
// amount as a string and every missing value as null, as the seed answered.
type RecordView struct {
	ID                  int64    `json:"id"`
	TrackingID          string   `json:"tracking_id"`
	PhoneNumber         string   `json:"phone_number"`
	Amount              string   `json:"amount"`
	Reference           string   `json:"reference"`
	Tag                 *string  `json:"tag"`
	Status              int      `json:"status"`
	StatusLabel         string   `json:"status_label"`
	ResponseCode        *string  `json:"response_code"`
	ResponseDescription *string  `json:"response_description"`
	TransactionCode     *string  `json:"transaction_code"`
	MerchantRequestID   *string  `json:"merchant_request_id"`
	CheckoutRequestID   *string  `json:"checkout_request_id"`
	Meta                MetaView `json:"meta"`
	CreatedAt           string   `json:"created_at"`
	UpdatedAt           string   `json:"updated_at"`
}

// MetaView is the record's meta object.
type MetaView struct {
	// TransactionDate is Daraja's TransactionDate, East Africa Time,
	// "YYYY-MM-DD HH:MM:SS".
	TransactionDate *string `json:"transaction_date"`
	// LateResult is Daraja's own outcome learnt after stkgate had finished
	// the payment with a stkgate.* code (an Unknown paid after all, say);
	// null when none came. It never changes the outcome above.
	LateResult *LateResultView `json:"late_result"`
}

// LateResultView is meta.late_result.
type LateResultView struct {
	ResponseCode        string  `json:"response_code"`
	ResponseDescription *string `json:"response_description"`
	StatusLabel         string  `json:"status_label"`
	TransactionCode     *string `json:"transaction_code"`
	TransactionDate     *string `json:"transaction_date"`
	MerchantRequestID   *string `json:"merchant_request_id"`
	CheckoutRequestID   *string `json:"checkout_request_id"`
	Source              *string `json:"source"`
	LearntAt            string  `json:"learnt_at"`
}

func lateResultView(l *store.LateResult) *LateResultView {
	if l == nil {
		return nil
	}
	return &LateResultView{
		ResponseCode:        l.ResponseCode,
		ResponseDescription: nullable(l.ResponseDescription),
		StatusLabel:         l.StatusLabel,
		TransactionCode:     nullable(l.TransactionCode),
		TransactionDate:     nullable(l.TransactionDate),
		MerchantRequestID:   nullable(l.MerchantRequestID),
		CheckoutRequestID:   nullable(l.CheckoutRequestID),
		Source:              nullable(l.Source),
		LearntAt:            timestamp(l.LearntAt),
	}
}

// ViewOf is the client's view of r.
func ViewOf(r store.Record) RecordView {
	return RecordView{
		ID:                  r.ID,
		TrackingID:          r.TrackingID,
		PhoneNumber:         r.PhoneNumber,
		Amount:              strconv.FormatInt(r.Amount, 10),
		Reference:           r.Reference,
		Tag:                 nullable(r.Tag),
		Status:              r.Status,
		StatusLabel:         r.StatusLabel,
		ResponseCode:        nullable(r.ResponseCode),
		ResponseDescription: nullable(r.ResponseDescription),
		TransactionCode:     nullable(r.TransactionCode),
		MerchantRequestID:   nullable(r.MerchantRequestID),
		CheckoutRequestID:   nullable(r.CheckoutRequestID),
		Meta:                MetaView{TransactionDate: nullable(r.TransactionDate), LateResult: lateResultView(r.LateResult)},
		CreatedAt:           timestamp(r.CreatedAt),
		UpdatedAt:           timestamp(r.UpdatedAt),
	}
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// timestamp writes t as RFC 3339 in UTC to the second, as the seed did.
func timestamp(t time.Time) string {
	return t.UTC().Truncate(time.Second).Format(time.RFC3339)
}
