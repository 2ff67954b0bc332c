package reconciler

import (
	"context"
	"testing"
	"time"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

// TestPhoneBusy: whose lock, and how old, keeps a request past its deadline
// waiting for its phone. The times are the lock entry's own, so the table
// needs no clock.
func TestPhoneBusy(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := context.Background()
	kv, err := ns.JS.CreateKeyValue(ctx, events.PhonesConfig(1, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	const after = time.Minute
	r := &reconciler{js: ns.JS, cfg: Config{ReconcileAfter: after}}
	const ours, theirs = "ours", "theirs"
	if _, err := kv.Put(ctx, "254700000001", []byte(ours)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "254700000002", []byte(theirs)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "254700000003", []byte(theirs)); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "254700000003"); err != nil {
		t.Fatal(err)
	}
	at := func(phone string) time.Time {
		t.Helper()
		h, err := kv.History(ctx, phone)
		if err != nil {
			t.Fatal(err)
		}
		return h[len(h)-1].Created()
	}
	for _, c := range []struct {
		name  string
		phone string
		since time.Duration // after the key's last change
		want  bool
	}{
		{"another payment's lock", "254700000002", 0, true},
		{"another payment's old lock", "254700000002", time.Hour, true},
		{"our own lock, just taken: its dispatcher may be about to push", "254700000001", after - time.Millisecond, true},
		{"our own lock, old: left by a dispatcher that stopped", "254700000001", after, false},
		{"released moments ago: the next request may not have taken it yet", "254700000003", after - time.Millisecond, true},
		{"released long ago", "254700000003", after, false},
		{"never locked", "254700000004", 0, false},
	} {
		now := time.Now()
		if c.phone != "254700000004" {
			now = at(c.phone).Add(c.since)
		}
		got, err := r.phoneBusy(ctx, c.phone, ours, now)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: busy %v, want %v", c.name, got, c.want)
		}
	}
}
