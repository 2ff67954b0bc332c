package devstack_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// sendCallback posts a success callback for the payment's push to url, as a
// forger or a misbehaving sender would, with the given amount and receipt,
// and returns the HTTP status.
func (s *stack) sendCallback(t *testing.T, url, checkoutID, phone string, amount int, receipt string) int {
	t.Helper()
	body := fmt.Sprintf(`{"Body":{"stkCallback":{"MerchantRequestID":"m-e2e","CheckoutRequestID":%q,"ResultCode":0,`+
		`"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":[`+
		`{"Name":"Amount","Value":%d.00},{"Name":"MpesaReceiptNumber","Value":%q},`+
		`{"Name":"TransactionDate","Value":20240321143055},{"Name":"PhoneNumber","Value":%s}]}}}}`,
		checkoutID, amount, receipt, phone)
	resp, err := s.cbClient.Post(url, "application/json;charset=UTF-8", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// pushedCheckoutID waits for Daraja to accept the payment's push and returns
// its CheckoutRequestID.
func (s *stack) pushedCheckoutID(t *testing.T, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pushes, err := s.fake.WaitPushes(ctx, 1, darajatest.WithCallbackURL(s.callbackURL(id)))
	if err != nil {
		t.Fatal(err)
	}
	return pushes[0].CheckoutRequestID
}

// TestForgedCallbackE2E: through the whole system, a forged success
// callback (no token, a wrong token, another payment's token) for a payment
// the customer cancelled changes nothing: the reconciler's STK query finds
// the cancellation, and that is what the client reads.
func TestForgedCallbackE2E(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{
		"RECONCILE_AFTER":        "2s",
		"RECONCILE_RECEIPT_WAIT": "0",
	})
	const phone = "0712345621"
	s.fake.Script("254"+phone[1:], darajatest.Script{ResultCode: "1032", NoCallback: true, CallbackDelay: -1})
	id := s.accept(t, phone)
	checkoutID := s.pushedCheckoutID(t, id)
	other := "7c9e6679-7425-40de-944b-e07fc1f90ae7"
	for _, url := range []string{
		s.cb + events.CallbackPath + id,
		s.cb + events.CallbackPath + id + "/" + strings.Repeat("A", 43),
		s.cb + events.CallbackPath + id + "/" + s.secrets.Token(other),
	} {
		if status := s.sendCallback(t, url, checkoutID, "254"+phone[1:], 1500, "FORGED0001"); status != http.StatusOK {
			t.Errorf("forged callback answered %d, want 200", status)
		}
	}
	data := s.waitFinal(t, id)
	if data["status_label"] != "Cancelled by User" || data["transaction_code"] != nil {
		t.Errorf("record after forged callbacks: %v", data)
	}
	if ev := s.completedEvent(t, id); ev.Source != events.SourceQuery || ev.Receipt != "" {
		t.Errorf("stk.completed = %+v, want the query's cancellation", ev)
	}
}

// TestWrongAmountCallbackConfirmedE2E: a callback with the genuine token but
// an amount other than the request's does not count; the reconciler asks
// Daraja at once (RECONCILE_AFTER is far off) and records Daraja's answer,
// paid or not, without the callback's receipt.
func TestWrongAmountCallbackConfirmedE2E(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{
		"RECONCILE_AFTER":            "10m",
		"RECONCILE_UNKNOWN_DEADLINE": "20m",
		"RECONCILE_REQUEST_DEADLINE": "30m",
	})
	tests := []struct {
		phone, code, label string
	}{
		{"0712345631", "0", "Success"},
		{"0712345632", "1032", "Cancelled by User"},
	}
	for _, tc := range tests {
		t.Run(tc.label, func(t *testing.T) {
			s.fake.Script("254"+tc.phone[1:], darajatest.Script{ResultCode: tc.code, NoCallback: true, CallbackDelay: -1})
			id := s.accept(t, tc.phone)
			checkoutID := s.pushedCheckoutID(t, id)
			if status := s.sendCallback(t, s.callbackURL(id), checkoutID, "254"+tc.phone[1:], 1, "WRONGAMT01"); status != http.StatusOK {
				t.Fatalf("callback answered %d, want 200", status)
			}
			data := s.waitFinal(t, id)
			if data["status_label"] != tc.label || data["response_code"] != tc.code || data["amount"] != "1500" || data["transaction_code"] != nil {
				t.Errorf("record = %v; want %s, the request's amount and no receipt", data, tc.label)
			}
			if ev := s.completedEvent(t, id); ev.Source != events.SourceQuery || ev.Receipt != "" || ev.Amount != 1500 {
				t.Errorf("stk.completed = %+v, want the query's answer", ev)
			}
		})
	}
}

// TestDevStackMakesCallbackSecret: with no CALLBACK_SECRET the dev stack
// makes one and gives the same to the dispatcher and callback-ingest, so a
// genuine callback is applied.
func TestDevStackMakesCallbackSecret(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"CALLBACK_SECRET": ""})
	id := s.accept(t, "0712345641")
	data := s.waitFinal(t, id)
	if data["status_label"] != "Success" {
		t.Fatalf("record = %v, want Success", data)
	}
	if ev := s.completedEvent(t, id); ev.Source != events.SourceCallback || ev.Receipt == "" {
		t.Errorf("stk.completed = %+v, want the callback's success with its receipt", ev)
	}
}
