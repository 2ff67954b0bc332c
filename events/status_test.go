package events

import "testing"

func TestOutcome(t *testing.T) {
	tests := []struct {
		code   string
		status int
		label  string
	}{
		{"", StatusPending, "Pending"},
		{"0", StatusFinal, "Success"},
		{"1032", StatusFinal, "Cancelled by User"},
		{"1", StatusFinal, "Insufficient Balance"},
		{"1037", StatusFinal, "Timed Out"},
		{"1019", StatusFinal, "Transaction Expired"},
		{"2001", StatusFinal, "Failed"},
		{"1036", StatusFinal, "Failed"},
		{"17", StatusFinal, "Failed"},
		{"SFC_IC0003", StatusFinal, "Failed"},
		{"400.002.02", StatusFinal, "Failed"},
		{"500.001.1001", StatusFinal, "Failed"},
		{"00", StatusFinal, "Failed"},
		{"stkgate.no_answer", StatusFinal, "Unknown"},
		{"stkgate.unreachable", StatusFinal, "Failed"},
		{"stkgate.invalid_outcome", StatusFinal, "Failed"},
		{"http.404", StatusFinal, "Failed"},
	}
	for _, tc := range tests {
		status, label := Outcome(tc.code)
		if status != tc.status || label != tc.label {
			t.Errorf("Outcome(%q) = %d, %q; want %d, %q", tc.code, status, label, tc.status, tc.label)
		}
	}
}
