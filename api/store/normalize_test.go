package store_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

// Every shape of completion the services could publish ends the payment:
// status 1 and a response code, never Pending, never an error that would
// get the event terminated.
func TestApplyNeverDropsACompletion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		complete func(s story) events.Completed
		code     string // the record's response_code; "" for the one sent
		descHas  string
	}{
		{"empty result code", func(s story) events.Completed {
			c := s.refused
			c.ResultCode, c.ResultDesc = "", "Forbidden"
			return c
		}, events.CodeInvalidOutcome, "no result code"},
		{"blank result code", func(s story) events.Completed {
			c := s.refused
			c.ResultCode = " \t"
			return c
		}, events.CodeInvalidOutcome, "no result code"},
		{"NUL in the result code", func(s story) events.Completed {
			c := s.success
			c.ResultCode = "0\x00"
			return c
		}, events.CodeUnverifiedSuccess, "result code"},
		{"NUL in the description", func(s story) events.Completed {
			c := s.refused
			c.ResultDesc = "Bad\x00 Request"
			return c
		}, "", "Bad Request"},
		{"invalid UTF-8 in the description", func(s story) events.Completed {
			c := s.refused
			c.ResultDesc = "Bad \xff\xfe Request"
			return c
		}, "", "Bad \uFFFD"},
		{"NUL in the receipt and Daraja's ids", func(s story) events.Completed {
			c := s.success
			c.Receipt = "NLJ7\x00RT61SV"
			c.MerchantRequestID += "\x00"
			c.CheckoutRequestID += "\x00"
			return c
		}, "", "processed successfully"},
		{"NUL in the payment's reference", func(s story) events.Completed {
			c := s.cancelled
			c.Reference = "INV\x00-2024"
			return c
		}, "", "cancelled"},
		{"invalid UTF-8 in the transaction date", func(s story) events.Completed {
			c := s.success
			c.TransactionDate = "2024-03-21 \xc3(14:30:55"
			return c
		}, "", "processed successfully"},
		{"a description of a megabyte", func(s story) events.Completed {
			c := s.refused
			c.ResultDesc = strings.Repeat("é", 1<<20)
			return c
		}, "", "é"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			s := newStory()
			c := tc.complete(s)
			f.apply(s.requested, s.dispatched)
			if err := f.db.Apply(context.Background(), []events.Event{c}); err != nil {
				t.Fatalf("Apply = %v: the completion would be terminated and the payment left Pending", err)
			}
			r := f.get(s.id)
			want := tc.code
			if want == "" {
				want = strings.TrimSpace(c.ResultCode)
			}
			if r.Status != events.StatusFinal || r.Stage != store.StageCompleted || r.ResponseCode != want {
				t.Fatalf("record: status %d stage %d code %q, want 1, completed, %q", r.Status, r.Stage, r.ResponseCode, want)
			}
			if !strings.Contains(r.ResponseDescription, tc.descHas) {
				t.Errorf("response_description %q lacks %q", r.ResponseDescription, tc.descHas)
			}
			if n := utf8.RuneCountInString(r.ResponseDescription); n > events.MaxTextRunes {
				t.Errorf("response_description of %d runes", n)
			}
			if want == events.CodeInvalidOutcome && r.StatusLabel != events.LabelFailed {
				t.Errorf("status_label %q, want %q", r.StatusLabel, events.LabelFailed)
			}
			if want == events.CodeUnverifiedSuccess && r.StatusLabel != events.LabelUnknown {
				t.Errorf("status_label %q, want %q: it said success", r.StatusLabel, events.LabelUnknown)
			}
		})
	}
}

// A completion naming another payment's CheckoutRequestID still finishes
// its own payment, as an invalid outcome (a success: Unknown, it may have
// been paid), and leaves the other alone.
func TestApplyCompletionWithAnotherPaymentsCheckoutID(t *testing.T) {
	t.Parallel()
	for _, batched := range []bool{false, true} {
		name := "separate batches"
		if batched {
			name = "one batch"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			a, b := newStory(), newStory()
			stolen := b.success
			stolen.CheckoutRequestID = a.dispatched.CheckoutRequestID
			if batched {
				f.apply(a.dispatched, b.requested, stolen)
			} else {
				f.apply(a.dispatched)
				f.apply(b.requested)
				f.apply(stolen)
			}
			f.check("a", a.wantDispatched())
			r := f.get(b.id)
			if r.Status != events.StatusFinal || r.ResponseCode != events.CodeUnverifiedSuccess || r.StatusLabel != events.LabelUnknown {
				t.Fatalf("b: status %d code %q label %q, want 1 %s Unknown", r.Status, r.ResponseCode, r.StatusLabel, events.CodeUnverifiedSuccess)
			}
			if r.CheckoutRequestID != "" || r.TransactionCode != "" {
				t.Errorf("b took checkout id %q, receipt %q", r.CheckoutRequestID, r.TransactionCode)
			}
			if !strings.Contains(r.ResponseDescription, a.dispatched.CheckoutRequestID) {
				t.Errorf("description %q does not say which CheckoutRequestID", r.ResponseDescription)
			}
		})
	}
}

// A completion whose M-Pesa receipt another payment already holds (in the
// table, or by an earlier event of the batch; in any case) still finishes
// its own payment without the receipt, as Unknown (it said success, and the
// genuine one of the two may be this one: a forged success may have taken
// the receipt first); the batch is applied and the other payment keeps its
// receipt. A payment's own receipt, applied again, is no conflict.
func TestApplyCompletionWithAnotherPaymentsReceipt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		batch bool
		lower bool // the second receipt in lower case
	}{
		{"separate batches", false, false},
		{"one batch", true, false},
		{"separate batches, lower case", false, true},
		{"one batch, lower case", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			a, b := newStory(), newStory()
			copied := b.success
			copied.Receipt = a.success.Receipt
			if tt.lower {
				copied.Receipt = strings.ToLower(copied.Receipt)
			}
			if tt.batch {
				f.apply(a.requested, a.success, b.requested, copied, a.success)
			} else {
				f.apply(a.requested, a.success)
				f.apply(b.requested)
				f.apply(copied)
				f.apply(a.success)
			}
			f.check("a", a.wantCompleted(a.success, true))
			r := f.get(b.id)
			if r.Status != events.StatusFinal || r.ResponseCode != events.CodeUnverifiedSuccess || r.StatusLabel != events.LabelUnknown {
				t.Fatalf("b: status %d code %q label %q, want 1 %s Unknown", r.Status, r.ResponseCode, r.StatusLabel, events.CodeUnverifiedSuccess)
			}
			if r.TransactionCode != "" || r.TransactionDate != "" {
				t.Errorf("b took receipt %q, date %q", r.TransactionCode, r.TransactionDate)
			}
			if !strings.Contains(r.ResponseDescription, "receipt "+copied.Receipt) ||
				!strings.Contains(r.ResponseDescription, "another payment") {
				t.Errorf("description %q does not say the receipt is another payment's", r.ResponseDescription)
			}
			// b's client may not be a's: a's tracking id is for the logs.
			if strings.Contains(r.ResponseDescription, a.id) {
				t.Errorf("description %q names the other payment", r.ResponseDescription)
			}
		})
	}
}

// Two projectors applying two payments with the same receipt at once: both
// batches are applied (neither fails for good), and exactly one payment holds
// the receipt.
func TestApplyConcurrentSameReceipt(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for i := 0; i < 10; i++ {
		a, b := newStory(), newStory()
		copied := b.success
		copied.Receipt = a.success.Receipt
		f.apply(a.requested, b.requested)
		errs := make(chan error, 2)
		for _, c := range []events.Completed{a.success, copied} {
			go func() { errs <- f.db.Apply(context.Background(), []events.Event{c}) }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: Apply: %v", i, err)
			}
		}
		ra, rb := f.get(a.id), f.get(b.id)
		if (ra.TransactionCode == "") == (rb.TransactionCode == "") {
			t.Fatalf("round %d: receipts %q and %q, want exactly one", i, ra.TransactionCode, rb.TransactionCode)
		}
		for _, r := range []store.Record{ra, rb} {
			if r.TransactionCode == "" && r.ResponseCode != events.CodeUnverifiedSuccess {
				t.Errorf("round %d: %s without the receipt has code %q, want %s", i, r.TrackingID, r.ResponseCode, events.CodeUnverifiedSuccess)
			}
		}
	}
}

func FuzzNormalize(f *testing.F) {
	f.Add("0", "The service request is processed successfully.", "NLJ7RT61SV", "ws_CO_1", "INV-1", "2024-03-21 14:30:55")
	f.Add("", "Forbidden", "", "", "INV\x00", "")
	f.Add("0\x00", "Bad\xff", "R\x00", "ws\x00", "\xc3(", "\n")
	f.Add(" 1032 ", strings.Repeat("x", 300), "", "", "", "")
	f.Fuzz(func(t *testing.T, code, desc, receipt, checkout, ref, date string) {
		p := events.Payment{TrackingID: "550e8400-e29b-41d4-a716-446655440000", Client: "acme", Phone: "254712345678", Amount: 1, Reference: ref}
		c := events.Completed{Payment: p, ResultCode: code, ResultDesc: desc, Receipt: receipt,
			TransactionDate: date, Source: events.SourceCallback, CheckoutRequestID: checkout}
		ev, why := store.Normalize(c)
		n, ok := ev.(events.Completed)
		if !ok {
			t.Fatalf("Normalize returned %T", ev)
		}
		if n.ResultCode == "" {
			t.Fatalf("no result code after Normalize")
		}
		rewritten := (n.ResultCode == events.CodeInvalidOutcome || n.ResultCode == events.CodeUnverifiedSuccess) && n.ResultCode != code
		if (why != "") != rewritten {
			t.Errorf("why %q with result code %q (sent %q)", why, n.ResultCode, code)
		}
		for _, s := range []string{n.ResultCode, n.ResultDesc, n.Receipt, n.CheckoutRequestID, n.Reference, n.TransactionDate, n.Client, n.Phone} {
			if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("unclean text %q", s)
			}
		}
		if utf8.RuneCountInString(n.ResultDesc) > events.MaxTextRunes {
			t.Fatalf("description of %d runes", utf8.RuneCountInString(n.ResultDesc))
		}
		again, why2 := store.Normalize(n)
		if again != ev || why2 != "" {
			t.Fatalf("Normalize is not idempotent: %+v, %q", again, why2)
		}
	})
}
