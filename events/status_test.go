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

// LabelCodes is the table Outcome reads: every code it lists has its
// label, every label but Pending and Failed is listed, and a caller's
// changes to the answer do not change the table.
func TestLabelCodes(t *testing.T) {
	lc := LabelCodes()
	for _, l := range []string{LabelSuccess, LabelCancelled, LabelInsufficient, LabelTimedOut, LabelExpired, LabelUnknown} {
		if len(lc[l]) == 0 {
			t.Errorf("LabelCodes has no code for %q", l)
		}
	}
	for _, l := range []string{LabelPending, LabelFailed} {
		if _, ok := lc[l]; ok {
			t.Errorf("LabelCodes lists %q, which no single code stands for", l)
		}
	}
	for label, codes := range lc {
		for _, c := range codes {
			if _, got := Outcome(c); got != label {
				t.Errorf("LabelCodes[%q] has %q, which Outcome labels %q", label, c, got)
			}
		}
	}
	lc[LabelSuccess][0] = "changed"
	if LabelCodes()[LabelSuccess][0] != "0" {
		t.Error("a change to LabelCodes' answer changed the table")
	}
	if got := LabelCodes()[LabelUnknown]; len(got) != 2 || got[0] != CodeNoAnswer || got[1] != CodeUnverifiedSuccess {
		t.Errorf("LabelCodes[Unknown] = %q, want its two codes, sorted", got)
	}
}
