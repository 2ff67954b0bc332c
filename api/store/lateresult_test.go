package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

// noAnswer is the reconciler's Unknown outcome of a push whose answer was
// lost, and late is the callback's success that came after it.
func (s story) noAnswer() events.Completed {
	return events.Completed{Payment: s.requested.Payment, ResultCode: events.CodeNoAnswer,
		ResultDesc: "no answer from Daraja and no callback within the prompt's lifetime",
		Source:     "reconciler", CompletedAt: requestedAt.Add(4 * time.Minute)}
}

func (s story) late() events.LateResult {
	return events.LateResult{Payment: s.requested.Payment, FollowsCode: events.CodeNoAnswer,
		ResultCode: "0", ResultDesc: "The service request is processed successfully.",
		Receipt: "SCL4XQ2B7K", TransactionDate: "2024-03-21 14:30:55", Source: events.SourceCallback,
		MerchantRequestID: s.dispatched.MerchantRequestID, CheckoutRequestID: s.dispatched.CheckoutRequestID,
		LearntAt: requestedAt.Add(6 * time.Minute)}
}

func (s story) wantLate() *store.LateResult {
	l := s.late()
	return &store.LateResult{ResponseCode: "0", ResponseDescription: l.ResultDesc, StatusLabel: events.LabelSuccess,
		TransactionCode: l.Receipt, TransactionDate: l.TransactionDate, MerchantRequestID: l.MerchantRequestID,
		CheckoutRequestID: l.CheckoutRequestID, Source: events.SourceCallback, FollowsCode: events.CodeNoAnswer,
		LearntAt: l.LearntAt}
}

func TestApplyLateResult(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := newStory()
	f.apply(s.requested, s.noAnswer())
	before := f.check("unknown", s.wantCompleted(s.noAnswer(), false))
	if before.StatusLabel != events.LabelUnknown || before.LateResult != nil {
		t.Fatalf("no_answer: label %q, late result %+v", before.StatusLabel, before.LateResult)
	}

	f.apply(s.late())
	want := s.wantCompleted(s.noAnswer(), false)
	want.LateResult = s.wantLate()
	after := f.check("late result", want)
	if !after.UpdatedAt.After(before.UpdatedAt) {
		t.Errorf("updated_at did not move: %v", after.UpdatedAt)
	}

	f.unchanged("the late result again", after, s.late())
	other := s.late()
	other.ResultCode, other.ResultDesc, other.Receipt = "1032", "Request cancelled by user", ""
	f.unchanged("another late result", after, other)
	f.unchanged("the whole story again", after, s.requested, s.noAnswer(), s.late(), s.success)
}

// A late result the projector meets before its payment's completion (a
// redelivery, another projector's batch) is kept, and the completion still
// decides the outcome.
func TestApplyLateResultBeforeTheCompletion(t *testing.T) {
	t.Parallel()
	want := func(s story) store.Record {
		r := s.wantCompleted(s.noAnswer(), false)
		r.LateResult = s.wantLate()
		return r
	}
	t.Run("separate batches", func(t *testing.T) {
		f := newFixture(t)
		s := newStory()
		f.apply(s.late())
		f.apply(s.requested)
		f.apply(s.noAnswer())
		f.check("completion after the late result", want(s))
	})
	t.Run("one batch", func(t *testing.T) {
		f := newFixture(t)
		s := newStory()
		f.apply(s.late(), s.requested, s.noAnswer())
		f.check("completion after the late result", want(s))
	})
	t.Run("with the record already pending", func(t *testing.T) {
		f := newFixture(t)
		s := newStory()
		f.apply(s.requested)
		f.apply(s.late())
		r := f.get(s.id)
		if r.Status != events.StatusPending || r.LateResult == nil {
			t.Fatalf("late result on a pending record: status %d late %+v", r.Status, r.LateResult)
		}
		f.apply(s.noAnswer())
		f.check("then the completion", want(s))
	})
}

func TestNormalizeLateResult(t *testing.T) {
	t.Parallel()
	s := newStory()
	l := s.late()
	l.ResultCode, l.ResultDesc, l.Receipt = "", "bad\x00", "R\x00"
	ev, why := store.Normalize(l)
	got := ev.(events.LateResult)
	if why != "" || got.ResultCode != events.CodeInvalidOutcome || got.Receipt != "R" {
		t.Fatalf("Normalize = %+v, %q", got, why)
	}
	if again, _ := store.Normalize(got); !cmp.Equal(again, ev) {
		t.Errorf("not idempotent: %+v", again)
	}
}

// lateFailure is a late failure of the payment: the customer's cancel, or a
// forgery by someone holding its CallBackURL.
func (s story) lateFailure() events.LateResult {
	l := s.late()
	l.ResultCode, l.ResultDesc, l.Receipt, l.TransactionDate = "1032", "Request cancelled by user", "", ""
	l.LearntAt = requestedAt.Add(5 * time.Minute)
	return l
}

// A late success replaces a late failure (a success pays someone, a failure
// nobody: a forged failure must not hide the customer's payment); nothing
// replaces a late success, and applying either again changes nothing.
func TestApplyLateSuccessReplacesLateFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		batches func(s story) [][]events.Event
	}{
		{"failure then success", func(s story) [][]events.Event {
			return [][]events.Event{{s.requested, s.noAnswer()}, {s.lateFailure()}, {s.late()}}
		}},
		{"success then failure", func(s story) [][]events.Event {
			return [][]events.Event{{s.requested, s.noAnswer()}, {s.late()}, {s.lateFailure()}}
		}},
		{"both in one batch, failure first", func(s story) [][]events.Event {
			return [][]events.Event{{s.requested, s.noAnswer(), s.lateFailure(), s.late()}}
		}},
		{"both in one batch, success first", func(s story) [][]events.Event {
			return [][]events.Event{{s.requested, s.noAnswer(), s.late(), s.lateFailure()}}
		}},
		{"failure, success, failure again", func(s story) [][]events.Event {
			return [][]events.Event{{s.requested, s.noAnswer()}, {s.lateFailure()}, {s.late()}, {s.lateFailure()}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			s := newStory()
			for _, b := range tc.batches(s) {
				f.apply(b...)
			}
			want := s.wantCompleted(s.noAnswer(), false)
			want.LateResult = s.wantLate()
			after := f.check("late success", want)

			other := s.late()
			other.Receipt = "SCL4XQ2B7Z"
			f.unchanged("the late results again, and another success", after, s.lateFailure(), s.late(), other)
		})
	}
}
