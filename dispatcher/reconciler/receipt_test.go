package reconciler

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// holdReceiptTaken plays callback-ingest holding p's success callback
// because its receipt was claimed first by holder.
func (h *harness) holdReceiptTaken(p events.Payment, checkoutID, holder, receipt string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := events.EnsureCallbackStream(ctx, h.ns.JS, 1); err != nil {
		h.t.Fatal(err)
	}
	body := fmt.Sprintf(`{"Body":{"stkCallback":{"MerchantRequestID":"m","CheckoutRequestID":%q,"ResultCode":0,`+
		`"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":[`+
		`{"Name":"Amount","Value":%d.00},{"Name":"MpesaReceiptNumber","Value":%q},`+
		`{"Name":"TransactionDate","Value":20240321143055},{"Name":"PhoneNumber","Value":%s}]}}}}`,
		checkoutID, p.Amount, receipt, p.Phone)
	msg := &nats.Msg{Subject: events.CallbackSubjectConfirm(p.TrackingID), Header: nats.Header{}, Data: []byte(body)}
	msg.Header.Set(events.CallbackHeaderReason, events.ConfirmReceiptTaken)
	msg.Header.Set(events.CallbackHeaderID, "cb-"+p.TrackingID)
	msg.Header.Set(events.CallbackHeaderReceipt, receipt)
	msg.Header.Set(events.CallbackHeaderReceiptHolder, holder)
	if _, err := h.ns.JS.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.CallbackStreamName)); err != nil {
		h.t.Fatal(err)
	}
}

// TestConfirmReceiptTaken: a success held because another payment (the
// holder) claimed its receipt first is settled by Daraja's STK query, at
// once and without a receipt; and the holder is questioned too, since its
// recorded success may be the forgery that took the receipt. When Daraja's
// query does not confirm the holder paid, its outcome cannot be undone
// (outcomes are final): the operator is told, by an error line naming both
// payments and a copy kept on stkcb.unmatched.receipt_disputed.<holder>.
// When Daraja confirms the holder, nothing is flagged.
func TestConfirmReceiptTaken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		holderCode string // Daraja's answer about the holder's push
		flagged    bool
		// holderLate: the holder's outcome is published only after the
		// claimant's (callback-ingest claims a receipt just before it
		// publishes the success): the holder is questioned once it is.
		holderLate bool
	}{
		{"the holder's success was forged", "1032", true, false},
		{"the holder was paid", "0", false, false},
		{"the holder's forged success published later", "1032", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) {
				c.ReconcileAfter = time.Minute
				c.UnknownDeadline = 2 * time.Minute
				c.ReceiptWait = time.Minute
			})
			h.start()
			const receipt = "RCPT0001XY"
			holder, holderResp := h.dispatch(darajatest.Script{ResultCode: tt.holderCode, NoCallback: true, CallbackDelay: -1})
			forged := events.Completed{Payment: holder, ResultCode: "0", ResultDesc: "The service request is processed successfully.",
				Receipt: receipt, TransactionDate: "2024-03-21 14:30:55", Source: events.SourceCallback,
				MerchantRequestID: holderResp.MerchantRequestID, CheckoutRequestID: holderResp.CheckoutRequestID, CompletedAt: time.Now().UTC()}
			if !tt.holderLate {
				h.publish(forged)
			}
			claimant, claimantResp := h.dispatch(darajatest.Script{ResultCode: "0", NoCallback: true, CallbackDelay: -1})
			h.holdReceiptTaken(claimant, claimantResp.CheckoutRequestID, holder.TrackingID, receipt)

			ev, _ := h.completion(claimant.TrackingID, 10*time.Second)
			if tt.holderLate {
				h.waitFor("the holder's question to wait for its outcome", func() bool {
					return strings.Contains(h.logs.String(), `"msg":"the receipt's holder has no outcome yet; asking later"`)
				})
				h.publish(forged)
			}
			if ev.Source != events.SourceQuery || ev.ResultCode != "0" || ev.Receipt != "" {
				t.Errorf("claimant recorded %q from %s with receipt %q; want 0 from query without a receipt", ev.ResultCode, ev.Source, ev.Receipt)
			}
			h.waitFor("the query about the holder", func() bool { return len(h.queriesFor(holderResp.CheckoutRequestID)) > 0 })
			waitConfirmAcked(t, h, 10*time.Second)
			if n := h.completions(holder.TrackingID); n != 1 {
				t.Errorf("%d stk.completed for the holder, want its one", n)
			}

			s, err := h.ns.JS.Stream(context.Background(), events.CallbackStreamName)
			if err != nil {
				t.Fatal(err)
			}
			flag, err := s.GetLastMsgForSubject(context.Background(), events.CallbackSubjectRefused(events.UnmatchedReceiptDisputed, holder.TrackingID))
			logs := h.logs.String()
			if !tt.flagged {
				if err == nil {
					t.Errorf("flagged on %s although Daraja confirmed the holder", flag.Subject)
				}
				if strings.Contains(logs, `"level":"ERROR"`) {
					t.Errorf("error logged although Daraja confirmed the holder:\n%s", logs)
				}
				return
			}
			if err != nil {
				t.Fatalf("no copy kept for the operator: %v", err)
			}
			for k, want := range map[string]string{
				events.CallbackHeaderReason:          events.UnmatchedReceiptDisputed,
				events.CallbackHeaderReceipt:         receipt,
				events.CallbackHeaderReceiptHolder:   holder.TrackingID,
				events.CallbackHeaderReceiptClaimant: claimant.TrackingID,
			} {
				if got := flag.Header.Get(k); got != want {
					t.Errorf("kept copy's %s %q, want %q", k, got, want)
				}
			}
			if got := flag.Header.Get(events.CallbackHeaderQueryResult); !strings.HasPrefix(got, tt.holderCode+" ") {
				t.Errorf("kept copy's query result %q, want Daraja's %s", got, tt.holderCode)
			}
			for _, want := range []string{`"level":"ERROR"`, `"tracking_id":"` + holder.TrackingID + `"`,
				`"claimant_tracking_id":"` + claimant.TrackingID + `"`, `"receipt":"` + receipt + `"`} {
				if !strings.Contains(logs, want) {
					t.Errorf("logs lack %s:\n%s", want, logs)
				}
			}
		})
	}
}
