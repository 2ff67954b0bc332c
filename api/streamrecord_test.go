package api

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
)

// publishEvents stores evs in the stream as their services would, with no
// projector running.
func (e *testEnv) publishEvents(t *testing.T, evs ...events.Event) {
	t.Helper()
	pub := &events.Publisher{JS: e.ns.JS, Source: "stkgate/test", Now: func() time.Time { return fixedNow }}
	for _, ev := range evs {
		if _, err := pub.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

// projectedView is what GET answers once the projector has applied evs,
// for comparison with the answer from the stream: equal but for the read
// model's serial id and its updated_at.
func projectedView(t *testing.T, e *testEnv, id string, evs ...events.Event) map[string]any {
	t.Helper()
	e.apply(t, evs...)
	r := e.get(t, acmeToken, id)
	if r.status != http.StatusOK {
		t.Fatalf("GET after projection: %d %s", r.status, r.raw)
	}
	data := r.body["data"].(map[string]any)
	if data["id"].(float64) < 1 {
		t.Errorf("projected id %v", data["id"])
	}
	return data
}

func TestGetFromStream(t *testing.T) {
	t.Parallel()
	dispatched := func(p events.Payment) events.Dispatched {
		return events.Dispatched{Payment: p, MerchantRequestID: "29115-34620561-1", CheckoutRequestID: "ws_CO_" + p.TrackingID}
	}
	for _, tc := range []struct {
		name      string
		events    func(p events.Payment) []events.Event
		status    float64
		label     string
		checkout  bool
		code      any
		receipt   any
		txnDate   any
		responseD any
	}{
		{
			name:   "requested only",
			events: func(p events.Payment) []events.Event { return []events.Event{events.Requested{Payment: p}} },
			status: 0, label: "Pending", code: nil, receipt: nil, txnDate: nil, responseD: nil,
		},
		{
			name: "dispatched",
			events: func(p events.Payment) []events.Event {
				return []events.Event{events.Requested{Payment: p}, dispatched(p)}
			},
			status: 0, label: "Pending", checkout: true, code: nil, receipt: nil, txnDate: nil, responseD: nil,
		},
		{
			name: "cancelled",
			events: func(p events.Payment) []events.Event {
				return []events.Event{events.Requested{Payment: p}, dispatched(p), events.Completed{
					Payment: p, ResultCode: "1032", ResultDesc: "Request cancelled by user",
					Source: events.SourceCallback, CheckoutRequestID: "ws_CO_" + p.TrackingID, CompletedAt: fixedNow}}
			},
			status: 1, label: "Cancelled by User", checkout: true, code: "1032", receipt: nil, txnDate: nil,
			responseD: "Request cancelled by user",
		},
		{
			name: "success, completion stored before the dispatch",
			events: func(p events.Payment) []events.Event {
				return []events.Event{events.Requested{Payment: p}, events.Completed{
					Payment: p, ResultCode: "0", ResultDesc: "The service request is processed successfully.",
					Receipt: "RBC12ABC34", TransactionDate: "2024-03-21 14:30:55",
					Source: events.SourceCallback, CompletedAt: fixedNow}, dispatched(p)}
			},
			status: 1, label: "Success", checkout: true, code: "0", receipt: "RBC12ABC34", txnDate: "2024-03-21 14:30:55",
			responseD: "The service request is processed successfully.",
		},
		{
			name: "refused by Daraja",
			events: func(p events.Payment) []events.Event {
				return []events.Event{events.Requested{Payment: p}, events.Completed{
					Payment: p, ResultCode: "400.002.02", ResultDesc: "Bad Request - Invalid PhoneNumber",
					Source: events.SourceDispatcher, CompletedAt: fixedNow}}
			},
			status: 1, label: "Failed", code: "400.002.02", receipt: nil, txnDate: nil,
			responseD: "Bad Request - Invalid PhoneNumber",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, nil)
			id := uuid.Must(uuid.NewV7()).String()
			evs := tc.events(payment(id, "acme"))
			e.publishEvents(t, evs...)

			r := e.get(t, acmeToken, id)
			if r.status != http.StatusOK || r.body["success"] != true {
				t.Fatalf("GET = %d %s", r.status, r.raw)
			}
			data := r.body["data"].(map[string]any)
			var checkout any
			if tc.checkout {
				checkout = "ws_CO_" + id
			}
			want := map[string]any{
				"id":                   float64(0),
				"tracking_id":          id,
				"phone_number":         "254712345678",
				"amount":               "1500",
				"reference":            "INV-2024-001",
				"tag":                  "loan-repayment",
				"status":               tc.status,
				"status_label":         tc.label,
				"response_code":        tc.code,
				"response_description": tc.responseD,
				"transaction_code":     tc.receipt,
				"merchant_request_id":  nil,
				"checkout_request_id":  checkout,
				"meta":                 map[string]any{"transaction_date": tc.txnDate, "late_result": nil},
				"created_at":           "2024-03-21T11:30:01Z",
				"updated_at":           data["updated_at"],
			}
			if tc.checkout {
				want["merchant_request_id"] = "29115-34620561-1"
			}
			if diff := cmp.Diff(want, data); diff != "" {
				t.Errorf("record from the stream (-want +got):\n%s", diff)
			}
			if u, err := time.Parse(time.RFC3339, data["updated_at"].(string)); err != nil || time.Since(u) > time.Minute {
				t.Errorf("updated_at %v (%v): not the events' storage time", data["updated_at"], err)
			}

			// Another client cannot see it.
			if r := e.get(t, globexToken, id); r.status != http.StatusNotFound || r.body["message"] != MsgNotFound {
				t.Errorf("another client's GET = %d %s", r.status, r.raw)
			}

			// Once projected, the read model answers the same, but for its
			// serial id and its own updated_at.
			proj := projectedView(t, e, id, evs...)
			for _, m := range []map[string]any{data, proj} {
				delete(m, "id")
				delete(m, "updated_at")
			}
			if diff := cmp.Diff(proj, data); diff != "" {
				t.Errorf("stream's record differs from the projected one (-projected +stream):\n%s", diff)
			}
		})
	}
}

func TestGetFromStreamNotFound(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	id := uuid.Must(uuid.NewV7()).String()
	// Events of the id other than its request do not make it exist.
	e.publishEvents(t, events.Dispatched{Payment: payment(id, "acme"), MerchantRequestID: "m", CheckoutRequestID: "c"})
	for _, id := range []string{id, uuid.Must(uuid.NewV7()).String(), "not-a-uuid"} {
		if r := e.get(t, acmeToken, id); r.status != http.StatusNotFound || r.body["message"] != MsgNotFound {
			t.Errorf("GET %s = %d %s", id, r.status, r.raw)
		}
	}
}

func TestGetFromStreamNATSDown(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	// A record in the read model is still served.
	known := uuid.Must(uuid.NewV7()).String()
	e.apply(t, events.Requested{Payment: payment(known, "acme")})
	// The handler has looked the stream up before NATS goes.
	if r := e.get(t, acmeToken, uuid.Must(uuid.NewV7()).String()); r.status != http.StatusNotFound {
		t.Fatalf("GET of an unknown id = %d %s", r.status, r.raw)
	}

	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	deadline := time.Now().Add(5 * time.Second)
	for e.conn.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	r := e.get(t, acmeToken, uuid.Must(uuid.NewV7()).String())
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "5" {
		t.Fatalf("GET of an unprojected id with NATS down = %d %v %s", r.status, r.header, r.raw)
	}
	if diff := cmp.Diff(map[string]any{"success": false, "message": MsgReadUnavailable}, r.body); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	if r := e.get(t, acmeToken, known); r.status != http.StatusOK {
		t.Errorf("GET of a projected id with NATS down = %d %s", r.status, r.raw)
	}
}

// A completion without a result code is final in the stream's view too,
// as the projector will write it: an invalid outcome, not Pending.
func TestGetFromStreamCompletionWithoutCode(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	id := uuid.Must(uuid.NewV7()).String()
	p := payment(id, "acme")
	evs := []events.Event{events.Requested{Payment: p}, events.Completed{Payment: p, ResultDesc: "<html>403</html>",
		Source: events.SourceDispatcher, CompletedAt: fixedNow}}
	e.publishEvents(t, evs...)
	r := e.get(t, acmeToken, id)
	data, _ := r.body["data"].(map[string]any)
	if r.status != http.StatusOK || data["status"] != float64(1) || data["response_code"] != events.CodeInvalidOutcome ||
		data["status_label"] != events.LabelFailed {
		t.Fatalf("GET = %d %s", r.status, r.raw)
	}
	proj := projectedView(t, e, id, evs...)
	for _, m := range []map[string]any{data, proj} {
		delete(m, "id")
		delete(m, "updated_at")
	}
	if diff := cmp.Diff(proj, data); diff != "" {
		t.Errorf("stream's record differs from the projected one (-projected +stream):\n%s", diff)
	}
}

// An Unknown payment (stkgate.no_answer) reads Unknown from the stream and
// from the read model alike, and a late success shows in meta.late_result
// without moving the outcome.
func TestGetUnknownWithALateResult(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	id := uuid.Must(uuid.NewV7()).String()
	p := payment(id, "acme")
	unknown := events.Completed{Payment: p, ResultCode: events.CodeNoAnswer, ResultDesc: "no answer",
		Source: "reconciler", CompletedAt: fixedNow}
	late := events.LateResult{Payment: p, FollowsCode: events.CodeNoAnswer, ResultCode: "0",
		ResultDesc: "The service request is processed successfully.", Receipt: "SCL4XQ2B7K",
		TransactionDate: "2024-03-21 14:30:55", Source: events.SourceCallback,
		CheckoutRequestID: "ws_CO_1", LearntAt: fixedNow.Add(time.Minute)}

	e.publishEvents(t, events.Requested{Payment: p}, unknown)
	r := e.get(t, acmeToken, id)
	data, _ := r.body["data"].(map[string]any)
	if r.status != http.StatusOK || data["status_label"] != events.LabelUnknown || data["status"] != float64(1) {
		t.Fatalf("GET of an Unknown from the stream = %d %s", r.status, r.raw)
	}
	if meta := data["meta"].(map[string]any); meta["late_result"] != nil {
		t.Fatalf("late_result before any: %v", meta["late_result"])
	}

	e.publishEvents(t, late)
	r = e.get(t, acmeToken, id)
	data, _ = r.body["data"].(map[string]any)
	wantLate := map[string]any{
		"response_code": "0", "response_description": "The service request is processed successfully.",
		"status_label": "Success", "transaction_code": "SCL4XQ2B7K", "transaction_date": "2024-03-21 14:30:55",
		"merchant_request_id": nil, "checkout_request_id": "ws_CO_1", "source": "callback",
		"learnt_at": "2024-03-21T11:31:01Z",
	}
	if data["status_label"] != events.LabelUnknown || data["response_code"] != events.CodeNoAnswer || data["transaction_code"] != nil {
		t.Fatalf("the late result moved the outcome: %s", r.raw)
	}
	if diff := cmp.Diff(wantLate, data["meta"].(map[string]any)["late_result"]); diff != "" {
		t.Errorf("meta.late_result from the stream (-want +got):\n%s", diff)
	}

	proj := projectedView(t, e, id, events.Requested{Payment: p}, unknown, late)
	for _, m := range []map[string]any{data, proj} {
		delete(m, "id")
		delete(m, "updated_at")
	}
	if diff := cmp.Diff(proj, data); diff != "" {
		t.Errorf("stream's record differs from the projected one (-projected +stream):\n%s", diff)
	}
}

// A late failure followed by a late success (a forger's fast 1032, then
// the customer's payment): the stream shows the success, as the read
// model does, never the failure that would hide the payment.
func TestGetFromStreamLateSuccessOverFailure(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	id := uuid.Must(uuid.NewV7()).String()
	p := payment(id, "acme")
	unknown := events.Completed{Payment: p, ResultCode: events.CodeNoAnswer, ResultDesc: "no answer",
		Source: "reconciler", CompletedAt: fixedNow}
	failed := events.LateResult{Payment: p, FollowsCode: events.CodeNoAnswer, ResultCode: "1032",
		ResultDesc: "Request cancelled by user", Source: events.SourceCallback,
		CheckoutRequestID: "ws_CO_1", LearntAt: fixedNow.Add(time.Minute)}
	paid := events.LateResult{Payment: p, FollowsCode: events.CodeNoAnswer, ResultCode: "0",
		ResultDesc: "The service request is processed successfully.", Receipt: "SCL4XQ2B7K",
		TransactionDate: "2024-03-21 14:30:55", Source: events.SourceCallback,
		CheckoutRequestID: "ws_CO_1", LearntAt: fixedNow.Add(2 * time.Minute)}
	e.publishEvents(t, events.Requested{Payment: p}, unknown, failed, paid)

	r := e.get(t, acmeToken, id)
	data, _ := r.body["data"].(map[string]any)
	late, _ := data["meta"].(map[string]any)["late_result"].(map[string]any)
	if late["response_code"] != "0" || late["transaction_code"] != "SCL4XQ2B7K" {
		t.Errorf("meta.late_result from the stream = %v, want the late success", late)
	}
	proj := projectedView(t, e, id, events.Requested{Payment: p}, unknown, failed, paid)
	for _, m := range []map[string]any{data, proj} {
		delete(m, "id")
		delete(m, "updated_at")
	}
	if diff := cmp.Diff(proj, data); diff != "" {
		t.Errorf("stream's record differs from the projected one (-projected +stream):\n%s", diff)
	}
}
