package devstack_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// TestNonDarajaAnswersEndPayments: answers that are not Daraja's usual
// envelope (a proxy's or firewall's HTML page, a 401 without body, a NUL in
// Daraja's errorMessage, a token endpoint that keeps answering an empty
// 400) end the payment (status 1) with a non-empty response_code and a
// description Postgres takes, instead of leaving it Pending for ever.
func TestNonDarajaAnswersEndPayments(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"DISPATCH_RETRY_MAX": "2s"})
	always := func(f darajatest.Failure) []darajatest.Failure {
		fs := make([]darajatest.Failure, 200)
		for i := range fs {
			fs[i] = f
		}
		return fs
	}
	tests := []struct {
		name  string
		phone string
		setup func(phone string)
		code  string
		desc  string // a part of response_description
	}{
		{"html-404 to the push", "0712348001", func(phone string) {
			s.fake.Script(phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailHTML404}})
		}, "http.404", "Not Found"},
		{"html-403 to the push", "0712348002", func(phone string) {
			s.fake.Script(phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailHTML403}})
		}, "http.403", "Forbidden"},
		{"401 without body to every push", "0712348003", func(phone string) {
			s.fake.Script(phone, darajatest.Script{FailFirst: always(darajatest.FailUnauthorizedEmpty)})
		}, "http.401", "Unauthorized"},
		{"NUL in errorMessage", "0712348004", func(phone string) {
			s.fake.Script(phone, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailNULMessage}})
		}, "400.002.02", "Bad Request - Invalid PhoneNumber"},
		// Last: it fails every token request from now on. The token the
		// dispatcher holds is expired too, as after a rotated secret.
		{"OAuth empty 400 from now on", "0712348005", func(string) {
			s.fake.FailOAuth(1<<30, darajatest.OAuthEmpty400)
			s.fake.ExpireTokens()
		}, "http.400", "access token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			phone := "254" + tc.phone[1:]
			tc.setup(phone)
			id := s.accept(t, tc.phone)
			data := s.waitFinal(t, id)
			desc, _ := data["response_description"].(string)
			if data["status_label"] != "Failed" || data["response_code"] != tc.code || !strings.Contains(desc, tc.desc) {
				t.Errorf("label, code, description = %v, %v, %q; want Failed, %q, …%q…", data["status_label"], data["response_code"], desc, tc.code, tc.desc)
			}
			if desc != events.CleanText(desc, events.MaxTextRunes) {
				t.Errorf("description %q is not clean", desc)
			}
			if ev := s.completedEvent(t, id); ev.Source != events.SourceDispatcher || ev.ResultCode != tc.code || ev.ResultDesc != desc {
				t.Errorf("stk.completed = %+v", ev)
			}
			if n := len(s.fake.AcceptedPushes(darajatest.WithPhone(phone))); n != 0 {
				t.Errorf("Daraja prompted the customer %d times, want 0", n)
			}
		})
	}
}

// TestServiceUnavailableAfterAcceptPromptsOnce: the gateway answers 503
// although Daraja processed the push. The retry meets "Unable to lock
// subscriber" — the payment's own prompt — and must not prompt again: the
// customer is prompted once and the payment ends Success with the receipt.
func TestServiceUnavailableAfterAcceptPromptsOnce(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)
	const phone = "254712348010"
	// The prompt stays open past the retry (after the 503's 5 s wait).
	wait := 2 * time.Second
	s.fake.Script(phone, darajatest.Script{
		FailFirst:     []darajatest.Failure{darajatest.FailServiceUnavailableAfterAccept},
		CallbackDelay: 5*time.Second + wait,
	})
	id := s.accept(t, "0"+phone[3:])
	data := s.waitFinal(t, id)

	prompts := s.fake.AcceptedPushes(darajatest.WithPhone(phone))
	if len(prompts) != 1 {
		t.Fatalf("Daraja prompted the customer %d times, want 1", len(prompts))
	}
	var calls []string
	for _, p := range s.fake.Pushes() {
		if p.Body.PhoneNumber == phone {
			calls = append(calls, p.Failure.String()+" "+p.ErrorCode)
		}
	}
	// The retry leaves within the 2 s after the 503 (UncertainRetryWindow)
	// or not at all: on a loaded machine (CI beside other jobs) the window
	// can pass before it, and the payment is ambiguous all the same.
	if len(calls) == 0 || len(calls) > 2 || len(calls) == 2 && calls[1] != "none "+daraja.CodeGeneric {
		t.Errorf("push calls %q: want the 503 and a retry refused with the lock (or none, the window passed)", calls)
	}
	// The dispatcher took the lock for the payment's own prompt: its
	// attempt is ambiguous (never pushed again), not waiting to push once
	// the phone is free, which would prompt again had the callback been
	// lost or the prompt outlived the lock's wait.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := s.nats.JS.KeyValue(ctx, events.AttemptsConfig(1).Bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var rec events.Attempt
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.State != events.AttemptAmbiguous || !rec.Uncertain {
		t.Errorf("attempt record %+v: want ambiguous after an uncertain call", rec)
	}
	receipt := ""
	for _, c := range s.fake.Callbacks() {
		if c.CheckoutRequestID == prompts[0].CheckoutRequestID {
			receipt = receiptOf(t, c.Body)
		}
	}
	if data["status_label"] != "Success" || data["response_code"] != "0" || receipt == "" || data["transaction_code"] != receipt ||
		data["checkout_request_id"] != prompts[0].CheckoutRequestID {
		t.Errorf("record %v; want Success with the receipt %q of checkout %s", data, receipt, prompts[0].CheckoutRequestID)
	}
}

// receiptOf reads MpesaReceiptNumber from a callback body.
func receiptOf(t *testing.T, body []byte) string {
	t.Helper()
	var cb struct {
		Body struct {
			StkCallback struct {
				CallbackMetadata struct {
					Item []struct {
						Name  string
						Value json.RawMessage
					}
				}
			} `json:"stkCallback"`
		}
	}
	if err := json.Unmarshal(body, &cb); err != nil {
		t.Fatalf("callback %s: %v", body, err)
	}
	for _, it := range cb.Body.StkCallback.CallbackMetadata.Item {
		var v string
		if it.Name == "MpesaReceiptNumber" && json.Unmarshal(it.Value, &v) == nil {
			return v
		}
	}
	return ""
}
