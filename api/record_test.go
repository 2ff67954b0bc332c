package api

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs (run with -update if the change is meant)\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// goldenRecords are the records of the golden answers, by file name.
func goldenRecords(t testing.TB) map[string]store.Record {
	t.Helper()
	created := time.Date(2024, 3, 21, 14, 30, 1, 123456000, time.FixedZone("EAT", 3*3600))
	pending := store.Record{
		ID:          1,
		TrackingID:  "550e8400-e29b-41d4-a716-446655440000",
		Client:      "acme",
		PhoneNumber: "254712345678",
		Amount:      1500,
		Reference:   "INV-2024-001",
		Status:      events.StatusPending,
		StatusLabel: events.LabelPending,
		Stage:       store.StageRequested,
		CreatedAt:   created,
		UpdatedAt:   created,
	}
	success := pending
	success.Tag = "loan-repayment"
	success.Status, success.StatusLabel = events.Outcome("0")
	success.ResponseCode = "0"
	success.ResponseDescription = "The service request is processed successfully."
	success.TransactionCode = "RBC12ABC34"
	success.MerchantRequestID = "29115-34620561-1"
	success.CheckoutRequestID = "ws_CO_191220191020363925"
	success.TransactionDate = "2024-03-21 14:30:55"
	success.Stage = store.StageCompleted
	success.Source = events.SourceCallback
	success.UpdatedAt = time.Date(2024, 3, 21, 11, 30, 55, 999999000, time.UTC)

	// A push whose answer was lost and whose callback came after stkgate
	// had finished it as Unknown: paid after all, the outcome unchanged.
	unknown := pending
	unknown.Status, unknown.StatusLabel = events.Outcome(events.CodeNoAnswer)
	unknown.ResponseCode = events.CodeNoAnswer
	unknown.ResponseDescription = "No answer from Daraja to the push and no callback within the prompt's lifetime: the customer may have paid"
	unknown.Stage = store.StageCompleted
	unknown.Source = "reconciler"
	unknown.LateResult = store.LateResultOf(events.LateResult{
		FollowsCode: events.CodeNoAnswer, ResultCode: "0",
		ResultDesc: "The service request is processed successfully.",
		Receipt:    "SCL4XQ2B7K", TransactionDate: "2024-03-21 14:30:55", Source: events.SourceCallback,
		MerchantRequestID: "2654-4b64-97ff-b827b542881d3130", CheckoutRequestID: "ws_CO_1007202409152617172396192",
		LearntAt: time.Date(2024, 3, 21, 11, 36, 12, 0, time.UTC),
	})
	unknown.UpdatedAt = time.Date(2024, 3, 21, 11, 36, 12, 500000000, time.UTC)
	if unknown.StatusLabel != events.LabelUnknown {
		t.Fatalf("stkgate.no_answer reads %q", unknown.StatusLabel)
	}

	return map[string]store.Record{"record-pending.json": pending, "record-success.json": success,
		"record-unknown-late-success.json": unknown}
}

func TestRecordViewGolden(t *testing.T) {
	t.Parallel()
	for name, rec := range goldenRecords(t) {
		t.Run(name, func(t *testing.T) {
			b, err := json.MarshalIndent(recordBody{Success: true, Data: ViewOf(rec)}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name, append(b, '\n'))
		})
	}
}
