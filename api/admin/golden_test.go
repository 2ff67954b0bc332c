package admin

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stkgate/stkgate/events"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The --json outputs are for machines: their shape is held by golden files.
func TestJSONGolden(t *testing.T) {
	at := time.Date(2026, 3, 21, 11, 30, 55, 123000000, time.UTC)
	later := at.Add(90 * time.Second)
	const id = "0b9e2f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
	for _, tc := range []struct {
		name string
		v    any
	}{
		{"history", historyJSON{id, []entry{
			{At: at, Source: events.StreamName, Seq: 7, Subject: "stk.requested." + id, Kind: events.TypeRequested,
				Summary: `client acme, 100 KES from *********678, reference "INV-1"`, Body: json.RawMessage(`{"data":{"phone":"*********678"}}`)},
			{At: later, Source: events.CallbackStreamName, Seq: 3, Subject: events.CallbackSubjectReceived(id), Kind: "callback",
				Summary: `received: ResultCode 0 "ok", CheckoutRequestID ws_CO_1`, Headers: map[string]string{events.CallbackHeaderPath: events.CallbackPath + id + "/REDACTED"}},
			{At: later, Source: events.AttemptsBucket, Seq: 2, Kind: "attempt", Summary: "now accepted after 1 call(s)"},
		}}},
		{"lag", []lagRow{
			{Stream: events.StreamName, Consumer: events.ConsumerProjector, Filter: events.SubjectAll, Pending: 3, AckPending: 1,
				Redelivered: 1, Waiting: 0, DeliveredSeq: 10, DeliveredAt: &at, AckFloorSeq: 9, AckFloorAt: &at, StreamLastSeq: 13,
				Stuck: true, State: "stuck: no ack for 6m0s, nobody pulling"},
			{Stream: events.CallbackStreamName, Consumer: events.ConsumerCallbackApply, Filter: "stkcb.received.*", State: "ok"},
		}},
		{"dlq-list", []deadLetter{
			{Seq: 1, StoredAt: at, Consumer: events.ConsumerDispatcher, Reason: events.DeadLetterTerminated, TermReason: "cannot",
				TrackingID: id, Stream: events.StreamName, StreamSeq: 7, Subject: "stk.requested." + id, MsgID: id + ":requested", Deliveries: "1"},
			{Seq: 2, StoredAt: later, Consumer: events.ConsumerProjector, Reason: events.DeadLetterMaxDeliveries,
				TrackingID: events.DeadLetterUnknownTrackingID, Stream: events.StreamName, StreamSeq: 8, Missing: "not in stream STK"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := writeJSON(&cmd{stdout: &out}, tc.v); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.name+".json")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("%s changed (go test -run TestJSONGolden -update rewrites it):\n%s", path, out.Bytes())
			}
		})
	}
}
