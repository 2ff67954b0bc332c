package events

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
)

var labels = map[string]string{
	"0":    LabelSuccess,
	"1032": LabelCancelled,
	"1":    LabelInsufficient,
	"1037": LabelTimedOut,
	"1019": LabelExpired,
}

// Outcome maps a response code to the record's status and label. The empty
// code means no outcome yet (Pending); every other code is final, and one not
// in the table (another ResultCode, or Daraja's errorCode for a refused push)
// is Failed.
func Outcome(responseCode string) (status int, label string) {
	if responseCode == "" {
		return StatusPending, LabelPending
	}
	if l, ok := labels[responseCode]; ok {
		return StatusFinal, l
	}
	return StatusFinal, LabelFailed
}
