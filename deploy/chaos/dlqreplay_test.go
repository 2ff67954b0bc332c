package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// A finished payment whose request was stored again must end as it was:
// neither taken back from final nor given another outcome.
func TestRequestReplayChanges(t *testing.T) {
	const id5 = "00000000-0000-7000-8000-000000000005"
	before := map[string]row{
		id1: {status: 1, responseCode: "0", receipt: ""},
		id2: {status: 1, responseCode: "1032"},
		id3: {status: 1, responseCode: "stkgate.no_answer"},
		id4: {status: 1, responseCode: "1037"},
	}
	rows := map[string]row{
		id1: {status: 1, responseCode: "0", receipt: "QAB1"},               // its receipt came later: unchanged
		id2: {status: 0, responseCode: ""},                                 // taken back
		id3: {status: 1, responseCode: "stkgate.no_answer", lateCode: "0"}, // a late result: unchanged
		id4: {status: 1, responseCode: "0"},                                // another outcome
	}
	rows[id5] = row{status: 1, responseCode: "1032"} // not replayed
	got := requestReplayChanges(before, rows)
	want := []string{
		id2 + `: status 0 code "", was status 1 code "1032"`,
		id4 + `: status 1 code "0", was status 1 code "1037"`,
	}
	if diff := cmp.Diff(want, firstFew(got)); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	delete(rows, id1)
	gone := requestReplayChanges(before, rows)
	if len(gone) != 3 || !slices.Contains(gone, id1+": record gone") {
		t.Errorf("a record gone: changes %v, want 3, one of them %s's", gone, id1)
	}

	r := &Report{Accepted: 1, RequestReplayChanged: gone}
	r.judge()
	if len(r.Failures) != 1 || !strings.Contains(r.Failures[0], "3 finished payments changed after their request was stored again") {
		t.Errorf("failures = %q, want one for the 3 changed records", r.Failures)
	}
}
