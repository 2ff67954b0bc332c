package events

import (
	"slices"
	"strings"
)

// Status of a record: 0 while waiting, 1 once the outcome is final, whatever
// it is, so a client that polls "until status is 1" always stops.
const (
	StatusPending = 0
	StatusFinal   = 1
)

// Labels of the status table.
const (
	LabelPending      = "Pending"
	LabelSuccess      = "Success"
	LabelCancelled    = "Cancelled by User"
	LabelInsufficient = "Insufficient Balance"
	LabelTimedOut     = "Timed Out"
	LabelExpired      = "Transaction Expired"
	LabelFailed       = "Failed"
	// LabelUnknown: stkgate cannot know the outcome (CodeNoAnswer). The
	// customer may have paid: a merchant must check the M-Pesa statement
	// before asking again, or risk charging twice.
	LabelUnknown = "Unknown"
)

// CodePrefix starts every result code stkgate decides itself, Daraja having
// given none: "stkgate.no_answer", "stkgate.unreachable", … Each reads as
// Failed, except CodeNoAnswer and CodeUnverifiedSuccess.
const CodePrefix = "stkgate."

// Result codes of outcomes stkgate decides itself that more than one
// service writes or reads.
const (
	// CodeNoAnswer: the push may have reached the customer but Daraja's
	// answer was lost (no CheckoutRequestID to query) and no callback came
	// within the prompt's lifetime. The customer may have paid: Unknown,
	// never Failed.
	CodeNoAnswer = CodePrefix + "no_answer"
	// CodeInvalidOutcome: a completion that could not be applied as it was
	// published (no result code, say). It is applied as Failed with this
	// code rather than left Pending for ever; the event itself stays in the
	// stream for an operator.
	CodeInvalidOutcome = CodePrefix + "invalid_outcome"
	// CodeUnverifiedSuccess: a success that could not be applied as it was
	// published (its receipt another payment's, its CheckoutRequestID
	// another push's, its result code unclean). One of two payments is
	// wrong and stkgate cannot tell which: the customer may have paid, so
	// Unknown, never Failed; its description says why.
	CodeUnverifiedSuccess = CodePrefix + "unverified_success"
)

var labels = map[string]string{
	"0":                   LabelSuccess,
	"1032":                LabelCancelled,
	"1":                   LabelInsufficient,
	"1037":                LabelTimedOut,
	"1019":                LabelExpired,
	CodeNoAnswer:          LabelUnknown,
	CodeUnverifiedSuccess: LabelUnknown,
}

// Outcome maps a response code to the record's status and label. The empty
// code means no outcome yet (Pending); every other code is final, and one not
// in the table (another ResultCode, Daraja's errorCode for a refused push, or
// a stkgate.* code other than CodeNoAnswer and CodeUnverifiedSuccess) is
// Failed.
func Outcome(responseCode string) (status int, label string) {
	if responseCode == "" {
		return StatusPending, LabelPending
	}
	if l, ok := labels[responseCode]; ok {
		return StatusFinal, l
	}
	return StatusFinal, LabelFailed
}

// LabelCodes are the response codes Outcome gives each label of the table
// that codes stand for, sorted: every label but Pending (no code yet) and
// Failed (every code not listed here). A search by label reads it, so that
// it finds exactly the records Outcome labels so. The map is the caller's.
func LabelCodes() map[string][]string {
	out := make(map[string][]string)
	for code, label := range labels {
		out[label] = append(out[label], code)
	}
	for _, codes := range out {
		slices.Sort(codes)
	}
	return out
}

// DecidedByStkgate reports whether a result code is one stkgate decided
// itself (a deadline passed, an answer lost) rather than Daraja's word. Only
// such an outcome can be followed by a late result (LateResult): Daraja's
// own outcome is never second-guessed.
func DecidedByStkgate(responseCode string) bool {
	return strings.HasPrefix(responseCode, CodePrefix)
}

// LateReplaces reports whether a late result with code next replaces the
// stored one with code stored (LateResult): only a success replaces a
// failure. A success pays someone and a failure nobody; anyone holding a
// payment's CallBackURL can send a failure at once, and the first late
// result standing would then hide the customer's payment. Nothing replaces
// a success: another one is an operator's matter.
func LateReplaces(stored, next string) bool { return stored != "0" && next == "0" }
