package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var (
	requestedAt = time.Date(2024, 3, 21, 11, 30, 1, 0, time.UTC)
	payment     = Payment{
		TrackingID:  "550e8400-e29b-41d4-a716-446655440000",
		Client:      "acme",
		Phone:       "254712345678",
		Amount:      1500,
		Reference:   "INV-2024-001",
		Tag:         "loan-repayment",
		RequestedAt: requestedAt,
	}
)

// goldenEvents pins every event type on the wire; downstream services decode
// these bytes, so a change here is a breaking change to them.
var goldenEvents = []struct {
	name   string
	source string
	ev     Event
}{
	{"requested", "stkgate/api", Requested{Payment: payment}},
	{"requested-callback-url", "stkgate/api", Requested{Payment: payment, CallbackURL: "https://shop.example/stk/INV-2024-001"}},
	{"dispatched", "stkgate/dispatcher", Dispatched{
		Payment:             payment,
		MerchantRequestID:   "2654-4b64-97ff-b827b542881d3130",
		CheckoutRequestID:   "ws_CO_1007202409152617172396192",
		ResponseDescription: "Success. Request accepted for processing",
		CustomerMessage:     "Success. Request accepted for processing",
	}},
	{"completed-callback-success", "stkgate/callback-ingest", Completed{
		Payment:           payment,
		ResultCode:        "0",
		ResultDesc:        "The service request is processed successfully.",
		Receipt:           "SCL4XQ2B7K",
		TransactionDate:   "2024-03-21 14:30:55",
		Source:            SourceCallback,
		MerchantRequestID: "2654-4b64-97ff-b827b542881d3130",
		CheckoutRequestID: "ws_CO_1007202409152617172396192",
		CompletedAt:       time.Date(2024, 3, 21, 11, 30, 55, 0, time.UTC),
	}},
	{"completed-dispatcher-refused", "stkgate/dispatcher", Completed{
		Payment:     payment,
		ResultCode:  "400.002.02",
		ResultDesc:  "Bad Request - Invalid PhoneNumber",
		Source:      SourceDispatcher,
		CompletedAt: time.Date(2024, 3, 21, 11, 30, 2, 0, time.UTC),
	}},
	{"late-result-callback-success", "stkgate/callback-ingest", LateResult{
		Payment:           payment,
		FollowsCode:       CodeNoAnswer,
		ResultCode:        "0",
		ResultDesc:        "The service request is processed successfully.",
		Receipt:           "SCL4XQ2B7K",
		TransactionDate:   "2024-03-21 14:30:55",
		Source:            SourceCallback,
		MerchantRequestID: "2654-4b64-97ff-b827b542881d3130",
		CheckoutRequestID: "ws_CO_1007202409152617172396192",
		LearntAt:          time.Date(2024, 3, 21, 11, 36, 12, 0, time.UTC),
	}},
}

func TestEncodeGolden(t *testing.T) {
	now := time.Date(2024, 3, 21, 14, 30, 56, 0, time.FixedZone("EAT", 3*3600))
	for _, tc := range goldenEvents {
		t.Run(tc.name, func(t *testing.T) {
			subject, msgID, body, err := Encode(tc.source, tc.ev, now)
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.ev.Type() + "." + payment.TrackingID; subject != want {
				t.Errorf("subject = %q, want %q", subject, want)
			}
			wantID := payment.TrackingID + ":" + tc.ev.Type()[len("stk."):]
			if l, ok := tc.ev.(LateResult); ok && l.ResultCode == "0" {
				// A late success may follow a late failure (LateReplaces).
				wantID += ":success"
			}
			if msgID != wantID {
				t.Errorf("msg id = %q, want %q", msgID, wantID)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, body, "", "  "); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			path := filepath.Join("testdata", tc.name+".json")
			if *update {
				if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), pretty.String()); diff != "" {
				t.Errorf("%s differs from the golden file (-want +got):\n%s", path, diff)
			}

			env, ev, err := Decode(want)
			if err != nil {
				t.Fatalf("decode golden: %v", err)
			}
			if diff := cmp.Diff(tc.ev, ev); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			if env.Type != tc.ev.Type() || env.Subject != payment.TrackingID || env.ID != msgID {
				t.Errorf("envelope = %+v", env)
			}
			if !env.Time.Equal(now) || env.Time.Location() != time.UTC {
				t.Errorf("time = %v, want %v in UTC", env.Time, now)
			}
		})
	}
}

func TestEncodeRefusesEmptyTrackingID(t *testing.T) {
	if _, _, _, err := Encode("x", Requested{}, time.Now()); err == nil {
		t.Fatal("Encode with no tracking id succeeded")
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := func(mut func(map[string]any)) []byte {
		_, _, body, err := Encode("s", Requested{Payment: payment}, requestedAt)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		mut(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		body []byte
	}{
		{"not json", []byte("{")},
		{"empty", nil},
		{"wrong specversion", valid(func(m map[string]any) { m["specversion"] = "0.3" })},
		{"unknown type", valid(func(m map[string]any) { m["type"] = "stk.refunded" })},
		{"no data", valid(func(m map[string]any) { delete(m, "data") })},
		{"null data", valid(func(m map[string]any) { m["data"] = nil })},
		{"data of wrong type", valid(func(m map[string]any) { m["data"] = []int{1} })},
		{"amount of wrong type", valid(func(m map[string]any) { m["data"].(map[string]any)["amount"] = "1500" })},
		{"subject mismatch", valid(func(m map[string]any) { m["subject"] = "another" })},
		{"no tracking id", valid(func(m map[string]any) {
			m["subject"] = ""
			m["data"].(map[string]any)["tracking_id"] = ""
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, ev, err := Decode(tc.body)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode = %v, %v; want ErrMalformed", ev, err)
			}
			if env, err := DecodeAs[Requested](tc.body); !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeAs = %+v, %v; want ErrMalformed", env, err)
			}
		})
	}
}

func TestTrackingIDOf(t *testing.T) {
	for subject, want := range map[string]string{
		"stk.completed.abc":                   "abc",
		"stk.requested." + payment.TrackingID: payment.TrackingID,
		"plain":                               "plain",
	} {
		if got := TrackingIDOf(subject); got != want {
			t.Errorf("TrackingIDOf(%q) = %q, want %q", subject, got, want)
		}
	}
}

func TestMaskPhone(t *testing.T) {
	for in, want := range map[string]string{
		"254712345678": "*********678",
		"0712345678":   "*******678",
		"12345678":     "*****678",
		"1234567":      "****567",
		"123456":       "******",
		"2547****5678": "*********678",
		"+254 7١٢٣٤٥":  "********٣٤٥",
		"":             "",
	} {
		if got := MaskPhone(in); got != want {
			t.Errorf("MaskPhone(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCallbackURL(t *testing.T) {
	for _, base := range []string{"https://cb.example.co.ke", "https://cb.example.co.ke/", "https://cb.example.co.ke//"} {
		if got, want := CallbackURL(base, "abc", "tok"), "https://cb.example.co.ke/hooks/stk-push/abc/tok"; got != want {
			t.Errorf("CallbackURL(%q) = %q, want %q", base, got, want)
		}
		if got, want := CallbackURL(base, "abc", ""), "https://cb.example.co.ke/hooks/stk-push/abc"; got != want {
			t.Errorf("CallbackURL(%q) without a token = %q, want %q", base, got, want)
		}
	}
}

// BenchmarkDecode: an stk.requested read whole by Decode and by DecodeAs.
func BenchmarkDecode(b *testing.B) {
	body, err := os.ReadFile(filepath.Join("testdata", "requested.json"))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := Decode(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DecodeAs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeAs[Requested](body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
