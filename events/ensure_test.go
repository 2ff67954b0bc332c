package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

// TestEnsureSideStreams: STK_CALLBACKS, STK_ADVISORIES and STK_DLQ live
// beside STK (no subject overlaps it), a matching one is left alone, and a
// different one is brought up to date.
func TestEnsureSideStreams(t *testing.T) {
	tests := []struct {
		name   string
		config func(int) jetstream.StreamConfig
		ensure func(context.Context, jetstream.JetStream, int) (jetstream.Stream, error)
	}{
		{events.CallbackStreamName, events.CallbackStreamConfig, events.EnsureCallbackStream},
		{events.AdvisoryStreamName, events.AdvisoryStreamConfig, events.EnsureAdvisoryStream},
		{events.DeadLetterStreamName, events.DeadLetterStreamConfig, events.EnsureDeadLetterStream},
	}
	ns := natstest.Start(t)
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.ensure(ctx, ns.JS, 1)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.config(1)
			got := s.CachedInfo().Config
			if got.Name != tt.name || got.Storage != jetstream.FileStorage || got.Replicas != 1 || got.MaxAge != want.MaxAge {
				t.Errorf("config %+v", got)
			}
			if diff := cmp.Diff(want.Subjects, got.Subjects); diff != "" {
				t.Errorf("subjects (-want +got):\n%s", diff)
			}
			created := s.CachedInfo().Created

			// Matching: left alone (an update would raise an advisory and
			// race consumer creation).
			s, err = tt.ensure(ctx, ns.JS, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !s.CachedInfo().Created.Equal(created) {
				t.Error("a matching stream was recreated")
			}

			old := tt.config(1)
			old.MaxAge = time.Hour
			old.Duplicates = time.Minute
			if _, err := ns.JS.UpdateStream(ctx, old); err != nil {
				t.Fatal(err)
			}
			s, err = tt.ensure(ctx, ns.JS, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.CachedInfo().Config; got.MaxAge != want.MaxAge || got.Duplicates != want.Duplicates {
				t.Errorf("stream not brought up to date: %+v", got)
			}
		})
	}
	if _, err := ns.JS.CreateOrUpdateConsumer(ctx, events.AdvisoryStreamName, events.DeadLetterConsumer()); err != nil {
		t.Errorf("dead-letter consumer: %v", err)
	}
}

func TestSideSubjects(t *testing.T) {
	for got, want := range map[string]string{
		events.CallbackSubjectReceived("abc"):                                 "stkcb.received.abc",
		events.CallbackSubjectUnmatched(events.UnmatchedBadPath):              "stkcb.unmatched.bad_path",
		events.CallbackSubjectRefused(events.UnmatchedForbiddenSource, "abc"): "stkcb.unmatched.forbidden_source.abc",
		events.DeadLetterSubject("projector", "abc"):                          "stkdlq.projector.abc",
		events.DeadLetterMsgID("dispatcher", 42):                              "dlq:dispatcher:42",
	} {
		if got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
	want := []string{
		"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.STK.*",
		"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.STK.*",
	}
	if diff := cmp.Diff(want, events.AdvisorySubjects()); diff != "" {
		t.Errorf("advisory subjects (-want +got):\n%s", diff)
	}
}

// STK_CALLBACKS bounds each subject (a flood of forged callbacks on one
// unmatched subject must not fill the disk), also on a stream made before
// the bound existed.
func TestCallbackStreamBoundsEachSubject(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	old := events.CallbackStreamConfig(1)
	old.MaxMsgsPerSubject = 0
	if _, err := ns.JS.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	s, err := events.EnsureCallbackStream(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxMsgsPerSubject; got != events.CallbackMaxPerSubject {
		t.Errorf("MaxMsgsPerSubject = %d, want %d", got, events.CallbackMaxPerSubject)
	}
	// The other streams have no such bound: the server's -1 for it matches
	// their definitions' 0, so they are left alone, not updated.
	if _, err := events.EnsureAdvisoryStream(ctx, ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	updates, err := ns.Conn.SubscribeSync("$JS.EVENT.ADVISORY.STREAM.UPDATED." + events.AdvisoryStreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	a, err := events.EnsureAdvisoryStream(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.CachedInfo().Config.MaxMsgsPerSubject; got > 0 {
		t.Errorf("advisory stream MaxMsgsPerSubject = %d, want none", got)
	}
	if m, err := updates.NextMsg(300 * time.Millisecond); err == nil {
		t.Errorf("a matching stream was updated: %s", m.Data)
	}
}
