package reconciler

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// holdForConfirmation plays callback-ingest keeping a success callback it
// does not trust (the amount differs from the request's) on
// stkcb.confirm.<id>, with its own receipt and amount.
func (h *harness) holdForConfirmation(p events.Payment, checkoutID string) {
	h.t.Helper()
	h.hold(p, checkoutID, false)
}

// holdFastFailure plays callback-ingest keeping a failure callback (the
// customer cancelled) that came too soon after its push on
// stkcb.confirm.<id>.
func (h *harness) holdFastFailure(p events.Payment, checkoutID string) {
	h.t.Helper()
	h.hold(p, checkoutID, true)
}

func (h *harness) hold(p events.Payment, checkoutID string, failure bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := events.EnsureCallbackStream(ctx, h.ns.JS, 1); err != nil {
		h.t.Fatal(err)
	}
	body := fmt.Sprintf(`{"Body":{"stkCallback":{"MerchantRequestID":"m","CheckoutRequestID":%q,"ResultCode":0,`+
		`"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":[`+
		`{"Name":"Amount","Value":%d.00},{"Name":"MpesaReceiptNumber","Value":"FORGED0001"},`+
		`{"Name":"TransactionDate","Value":20240321143055},{"Name":"PhoneNumber","Value":%s}]}}}}`,
		checkoutID, p.Amount*100, p.Phone)
	reason := events.ConfirmAmountMismatch
	if failure {
		body = fmt.Sprintf(`{"Body":{"stkCallback":{"MerchantRequestID":"m","CheckoutRequestID":%q,"ResultCode":1032,`+
			`"ResultDesc":"Request cancelled by user"}}}`, checkoutID)
		reason = events.ConfirmFastFailure
	}
	msg := &nats.Msg{Subject: events.CallbackSubjectConfirm(p.TrackingID), Header: nats.Header{}, Data: []byte(body)}
	msg.Header.Set(events.CallbackHeaderReason, reason)
	msg.Header.Set(events.CallbackHeaderID, "cb-"+p.TrackingID)
	if _, err := h.ns.JS.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.CallbackStreamName)); err != nil {
		h.t.Fatal(err)
	}
}

// TestConfirmThroughQuery: a callback held for confirmation (a doubtful
// success, or a failure that came too soon after its push) is
// settled by Daraja's STK query, asked at once rather than RECONCILE_AFTER
// after the push, and Daraja's answer is what is recorded (source "query"),
// whether it confirms the payment or says it failed; the callback's receipt
// and amount never are. The confirmation waits in JetStream, so one held
// while no reconciler runs is taken up when one starts.
func TestConfirmThroughQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, queryCode string
		whileStopped    bool
		// undispatched: the callback came before stk.dispatched; the
		// CheckoutRequestID is the attempt record's.
		undispatched bool
		// fastFailure: the held callback is a failure (1032) that came
		// too soon; else a success whose amount differs.
		fastFailure bool
	}{
		{"query says paid", "0", false, false, false},
		{"query says cancelled", "1032", false, false, false},
		{"query says insufficient balance", "1", false, false, false},
		{"held while no reconciler ran", "0", true, false, false},
		{"callback before stk.dispatched", "0", false, true, false},
		// A fast failure that Daraja says was paid: TestConfirmFastFailurePaid.
		{"fast failure, query says cancelled", "1032", false, false, true},
		{"fast failure, query says wrong PIN", "2001", false, false, true},
		{"fast failure before stk.dispatched, query says cancelled", "1032", false, true, true},
		// Daraja's own fast failures, held as any other (a forger can send
		// their codes as fast): recorded as the query answers, at once.
		{"fast failure, query says DS timeout", "1037", false, false, true},
		{"fast failure, query says SMSC ACK timeout", "1036", false, false, true},
		{"fast failure, query says subscriber locked", "1001", false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// RECONCILE_AFTER far beyond the test: only the confirmation
			// can have asked Daraja.
			h := newHarness(t, func(c *Config) {
				c.ReconcileAfter = time.Minute
				c.UnknownDeadline = 2 * time.Minute
				c.ReceiptWait = time.Minute
			})
			if !tt.whileStopped {
				h.start()
			}
			sc := darajatest.Script{ResultCode: tt.queryCode, NoCallback: true, CallbackDelay: -1}
			var p events.Payment
			var resp daraja.PushResponse
			if tt.undispatched {
				p, resp = h.pushWithoutDispatched(sc)
			} else {
				p, resp = h.dispatch(sc)
			}
			h.hold(p, resp.CheckoutRequestID, tt.fastFailure)
			if tt.whileStopped {
				time.Sleep(200 * time.Millisecond)
				if n := h.completions(p.TrackingID); n != 0 {
					t.Fatalf("%d stk.completed with no reconciler running", n)
				}
				h.start()
			}
			ev, _ := h.completion(p.TrackingID, 10*time.Second)
			if ev.Source != events.SourceQuery || ev.ResultCode != tt.queryCode {
				t.Errorf("recorded source %q, result %q; want query, %q", ev.Source, ev.ResultCode, tt.queryCode)
			}
			if ev.Receipt != "" || ev.TransactionDate != "" {
				t.Errorf("the unconfirmed callback's receipt or date was recorded: %q %q", ev.Receipt, ev.TransactionDate)
			}
			if ev.Amount != p.Amount || ev.Phone != p.Phone || ev.CheckoutRequestID != resp.CheckoutRequestID {
				t.Errorf("recorded %d from %s for %s; want the request's %d from %s for %s",
					ev.Amount, ev.Phone, ev.CheckoutRequestID, p.Amount, p.Phone, resp.CheckoutRequestID)
			}
			if n := len(h.queriesFor(resp.CheckoutRequestID)); n < 1 {
				t.Errorf("%d STK queries, want at least 1", n)
			}
			// The confirmation is done with (acked), not left pending.
			waitConfirmAcked(t, h, 5*time.Second)
			if n := h.completions(p.TrackingID); n != 1 {
				t.Errorf("%d stk.completed, want 1", n)
			}
		})
	}
}

func waitConfirmAcked(t *testing.T, h *harness, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		// The reconciler creates the consumer as it starts.
		var info *jetstream.ConsumerInfo
		c, err := h.ns.JS.Consumer(context.Background(), events.CallbackStreamName, events.ConsumerReconcilerConfirm)
		if err == nil {
			info, err = c.Info(context.Background())
		}
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Consumer >= 1 {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("confirmation consumer after %s: %v", within, err)
			}
			t.Fatalf("confirmation consumer: pending %d, ack pending %d after %s", info.NumPending, info.NumAckPending, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConfirmWithoutCheckoutID: a doubtful success callback for a push whose
// answer was lost (no CheckoutRequestID to query) cannot be confirmed: the
// payment ends Unknown after the prompt's lifetime as any such push does, and
// the callback's claim is not its outcome. The callback is not dropped
// either: it is kept again on stkcb.received.<id> as a late result, byte for
// byte, where callback-ingest's applier publishes it as stk.late_result (the
// record's meta.late_result) as it does any callback after such an outcome.
//
// A failure held for coming too soon is handled alike: with nothing to
// query, the payment stays open for a genuine callback, ends Unknown if none
// comes, and the failure is shown as its late result.
func TestConfirmWithoutCheckoutID(t *testing.T) {
	t.Parallel()
	for _, failure := range []bool{false, true} {
		name := "doubtful success"
		if failure {
			name = "fast failure"
		}
		t.Run(name, func(t *testing.T) { t.Parallel(); testConfirmWithoutCheckoutID(t, failure) })
	}
}

func testConfirmWithoutCheckoutID(t *testing.T, failure bool) {
	h := newHarness(t, nil)
	h.start()
	p := h.newPayment()
	h.publish(events.Requested{Payment: p})
	sent := time.Now().UTC()
	h.putAttempt(events.Attempt{TrackingID: p.TrackingID, State: events.AttemptAmbiguous, Calls: 1, FirstSentAt: sent, UpdatedAt: sent})
	h.hold(p, "ws_CO_UNKNOWN_TO_STKGATE", failure)
	ev, _ := h.completion(p.TrackingID, 10*time.Second)
	if ev.ResultCode != CodeNoAnswer || ev.Receipt != "" {
		t.Errorf("recorded %q (receipt %q), want %s without a receipt", ev.ResultCode, ev.Receipt, CodeNoAnswer)
	}
	waitConfirmAcked(t, h, 10*time.Second)

	ctx := context.Background()
	s, err := h.ns.JS.Stream(ctx, events.CallbackStreamName)
	if err != nil {
		t.Fatal(err)
	}
	held, err := s.GetLastMsgForSubject(ctx, events.CallbackSubjectConfirm(p.TrackingID))
	if err != nil {
		t.Fatal(err)
	}
	late, err := s.GetLastMsgForSubject(ctx, events.CallbackSubjectReceived(p.TrackingID))
	if err != nil {
		t.Fatalf("the callback was not kept as a late result: %v", err)
	}
	if !bytes.Equal(late.Data, held.Data) {
		t.Errorf("kept body %q, want the held one %q", late.Data, held.Data)
	}
	if got := late.Header.Get(events.CallbackHeaderReason); got != events.CallbackReasonLate {
		t.Errorf("reason %q, want %q", got, events.CallbackReasonLate)
	}
	if got := late.Header.Get(events.CallbackHeaderID); got != "cb-"+p.TrackingID {
		t.Errorf("callback id %q, want the held callback's", got)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.CallbackSubjectReceived(p.TrackingID)))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[events.CallbackSubjectReceived(p.TrackingID)]; n != 1 {
		t.Errorf("kept %d times, want once", n)
	}
}

// TestConfirmHeldBeforeQueryOutcomeGoesLate: a held callback whose payment
// the query finished with a code of stkgate's (the transaction does not
// exist) is not dropped, whenever it was kept: the query may have been
// asked before the callback existed. With no CheckoutRequestID to ask
// about, it is handed back as a late result, once, where callback-ingest's
// checks of a late callback decide it (a doubtful success is kept for the
// operator, never published).
func TestConfirmHeldBeforeQueryOutcomeGoesLate(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	p := h.newPayment()
	h.publish(events.Requested{Payment: p})
	h.holdForConfirmation(p, "ws_CO_UNKNOWN_TO_DARAJA")
	h.publish(events.Completed{Payment: p, ResultCode: CodeUnknownTransaction, ResultDesc: "The transaction does not exist",
		Source: events.SourceQuery, CompletedAt: time.Now().UTC()})
	h.start()
	waitConfirmAcked(t, h, 10*time.Second)
	s, err := h.ns.JS.Stream(context.Background(), events.CallbackStreamName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), events.CallbackSubjectReceived(p.TrackingID))
	if err != nil || m.Header.Get(events.CallbackHeaderReason) != "late_result" {
		t.Fatalf("not handed back as a late result: %v", err)
	}
	if _, found := h.lateResult(p.TrackingID); found {
		t.Error("a late result was published without callback-ingest's checks")
	}
}

// TestConfirmAfterOutcome: a held callback whose payment already has
// Daraja's outcome is done with, without a query. Only a held success
// against a failure of Daraja's is an error an operator must see; a held
// fast failure is settled by any outcome (a genuine callback, a query).
func TestConfirmAfterOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		fastFailure bool
		stored      string // the stored stk.completed's result code, from a callback
		wantError   bool
	}{
		{"doubtful success, payment failed", false, "1032", true},
		{"doubtful success, payment paid", false, "0", false},
		{"fast failure, payment failed", true, "1032", false},
		{"fast failure, payment paid", true, "0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			p, resp := h.dispatch(darajatest.Script{ResultCode: tt.stored, NoCallback: true, CallbackDelay: -1})
			h.publish(events.Completed{Payment: p, ResultCode: tt.stored, ResultDesc: "as Daraja said", Source: events.SourceCallback,
				CheckoutRequestID: resp.CheckoutRequestID, CompletedAt: time.Now().UTC()})
			h.hold(p, resp.CheckoutRequestID, tt.fastFailure)
			h.start()
			waitConfirmAcked(t, h, 10*time.Second)
			if n := len(h.queriesFor(resp.CheckoutRequestID)); n != 0 {
				t.Errorf("%d STK queries, want none", n)
			}
			if n := h.completions(p.TrackingID); n != 1 {
				t.Errorf("%d stk.completed, want 1", n)
			}
			logged := strings.Contains(h.logs.String(), `"level":"ERROR"`)
			if logged != tt.wantError {
				t.Errorf("error logged %v, want %v:\n%s", logged, tt.wantError, h.logs.String())
			}
		})
	}
}

// TestConfirmFastFailurePaid: a failure held for coming too soon, that
// Daraja's STK query says was paid, is not finished at once as a Success
// without a receipt: the genuine callback, which has the receipt, may still
// come, as it would for a push without a callback (RECONCILE_RECEIPT_WAIT
// after the push). When it comes, its outcome, receipt included, is the one
// recorded; when it does not, the query's Success is, without a receipt.
func TestConfirmFastFailurePaid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		receiptWait time.Duration
		callback    bool // the genuine success callback comes after the query
	}{
		// The held failure is looked at again RECONCILE_RECEIPT_WAIT after
		// the push, and finds the callback's outcome.
		{"the genuine callback comes", 3 * time.Second, true},
		{"no callback comes", 1500 * time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) {
				c.ReconcileAfter = time.Minute
				c.UnknownDeadline = 2 * time.Minute
				c.ReceiptWait = tt.receiptWait
			})
			h.start()
			p, resp := h.dispatch(darajatest.Script{ResultCode: "0", NoCallback: true, CallbackDelay: -1})
			h.holdFastFailure(p, resp.CheckoutRequestID)
			h.waitFor("the STK query", func() bool { return len(h.queriesFor(resp.CheckoutRequestID)) > 0 })
			want := events.Completed{Payment: p, ResultCode: "0", ResultDesc: "The service request is processed successfully.",
				Source: events.SourceQuery, CheckoutRequestID: resp.CheckoutRequestID}
			if tt.callback {
				want.Receipt, want.TransactionDate, want.Source = "SCL4XQ2B7K", "2024-03-21 14:30:55", events.SourceCallback
				h.publish(events.Completed{Payment: p, ResultCode: "0", ResultDesc: want.ResultDesc, Receipt: want.Receipt,
					TransactionDate: want.TransactionDate, Source: events.SourceCallback,
					MerchantRequestID: resp.MerchantRequestID, CheckoutRequestID: resp.CheckoutRequestID, CompletedAt: time.Now().UTC()})
			}
			waitConfirmAcked(t, h, 10*time.Second)
			ev, _ := h.completion(p.TrackingID, time.Second)
			if ev.ResultCode != want.ResultCode || ev.Source != want.Source || ev.Receipt != want.Receipt {
				t.Errorf("recorded %q from %s with receipt %q; want %q from %s with receipt %q",
					ev.ResultCode, ev.Source, ev.Receipt, want.ResultCode, want.Source, want.Receipt)
			}
			if n := h.completions(p.TrackingID); n != 1 {
				t.Errorf("%d stk.completed, want 1", n)
			}
		})
	}
}
