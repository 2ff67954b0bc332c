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
