package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

// TestAttemptReads: GetAttempt (any replica) and AttemptFromLeader read the
// same record; a deleted or purged one is not found, and one that cannot
// be decoded is ErrMalformed.
func TestAttemptReads(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := ns.JS.CreateOrUpdateKeyValue(ctx, events.AttemptsConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	put := func(id string, v any) {
		t.Helper()
		body, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, id, body); err != nil {
			t.Fatal(err)
		}
	}
	stored, deleted, purged, garbled, missing := uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	want := events.Attempt{TrackingID: stored, State: events.AttemptAccepted, Calls: 2, CheckoutRequestID: "ws_CO_1", UpdatedAt: at}
	put(stored, want)
	for _, id := range []string{deleted, purged} {
		put(id, events.Attempt{TrackingID: id, State: events.AttemptSending})
	}
	if err := kv.Delete(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, purged); err != nil {
		t.Fatal(err)
	}
	put(garbled, "not an attempt")

	tests := []struct {
		name      string
		id        string
		found     bool
		malformed bool
	}{
		{"stored", stored, true, false},
		{"deleted", deleted, false, false},
		{"purged", purged, false, false},
		{"never written", missing, false, false},
		{"undecodable", garbled, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leader, lfound, lerr := events.AttemptFromLeader(ctx, ns.JS, tt.id)
			anyReplica, _, afound, aerr := events.GetAttempt(ctx, kv, tt.id)
			for _, r := range []struct {
				how   string
				a     events.Attempt
				found bool
				err   error
			}{{"from the leader", leader, lfound, lerr}, {"from any replica", anyReplica, afound, aerr}} {
				if tt.malformed {
					if !errors.Is(r.err, events.ErrMalformed) {
						t.Errorf("%s: error %v, want ErrMalformed", r.how, r.err)
					}
					continue
				}
				if r.err != nil || r.found != tt.found {
					t.Fatalf("%s: found %v, error %v; want found %v", r.how, r.found, r.err, tt.found)
				}
				if tt.found && r.a != want {
					t.Errorf("%s: %+v, want %+v", r.how, r.a, want)
				}
			}
		})
	}
}
