package api

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

// An ack that never comes for a request without an Idempotency-Key: the
// request may be stored, so the 503 must not say that nothing was sent; it
// names the tracking id, and GET of that id tells the client the truth.
func TestCreateOutcomeUnknownNamesTheTrackingID(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.PublishTimeout = 400 * time.Millisecond })
	ctx := context.Background()
	sink := e.loseAcks(t)
	r := e.post(t, acmeToken, validBody)
	if r.status != http.StatusServiceUnavailable || r.body["message"] != MsgUnknownOutcome {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	id, _ := r.body["tracking_id"].(string)
	sent, err := sink.NextMsg(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := events.TrackingIDOf(sent.Subject); id == "" || got != id {
		t.Fatalf("503 names tracking_id %q, the request sent was %s", id, got)
	}
	_ = sink.Unsubscribe()

	// Had it been stored, GET finds it (from the stream, before the
	// projector has it): store what was sent, as JetStream would have.
	if _, err := events.EnsureStream(ctx, e.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ns.JS.Publish(ctx, sent.Subject, sent.Data); err != nil {
		t.Fatal(err)
	}
	if g := e.get(t, acmeToken, id); g.status != http.StatusOK {
		t.Errorf("GET of the named id after it was stored: %d %s", g.status, g.raw)
	}
}

// A publish whose first attempt's ack never came and whose repeat is then
// refused: the refusal says only that the repeat was not stored, not the
// first attempt, so the answer must stay "not confirmed" and the key must
// keep its tracking id. (Seen in a chaos run, nats-server killed
// mid-publish: the key was released, the client's keyed retry made a
// second payment, and the customer was prompted for both.)
func TestCreateRefusedRepeatAfterLostAckStaysUnconfirmed(t *testing.T) {
	t.Parallel()
	for _, keyed := range []bool{true, false} {
		t.Run(map[bool]string{true: "keyed", false: "unkeyed"}[keyed], func(t *testing.T) {
			t.Parallel()
			// Each attempt waits half of it (Handler.publish): the repeat
			// starts 2 s after the first, long after the stream below
			// exists.
			e := newTestEnv(t, func(o *Options) { o.PublishTimeout = 4 * time.Second })
			ctx := context.Background()
			sink := e.loseAcks(t)
			refusing := make(chan error, 1)
			go func() {
				// The first attempt reached the broker and its ack is
				// lost; from now on JetStream refuses the subject (a
				// stream whose messages may be one byte at most).
				_, err := sink.NextMsg(10 * time.Second)
				if err == nil {
					err = sink.Unsubscribe()
				}
				if err == nil {
					err = createRefusingStream(ctx, e.ns.JS)
				}
				refusing <- err
			}()
			var r response
			if keyed {
				r = e.postKey(t, acmeToken, "k", validBody)
			} else {
				r = e.post(t, acmeToken, validBody)
			}
			if err := <-refusing; err != nil {
				t.Fatal(err)
			}
			want := MsgUnknownOutcome
			if keyed {
				want = MsgUnconfirmed
			}
			if r.status != http.StatusServiceUnavailable || r.body["message"] != want {
				t.Fatalf("status %d: %s; want 503 %q", r.status, r.raw, want)
			}
			if !keyed {
				if id, _ := r.body["tracking_id"].(string); id == "" {
					t.Fatalf("503 names no tracking_id: %s", r.raw)
				}
				return
			}
			if row, ok := e.keyRow(t, "acme", "k"); !ok || row.State != store.KeyPending {
				t.Fatalf("claim after a lost ack then a refusal: %+v (found %v); a retry would make a second payment", row, ok)
			}
		})
	}
}

// A keyed retry that takes over a claim whose earlier publish had an
// unknown outcome, finds nothing in the stream and is then refused outright:
// the earlier attempt may still be stored (a clustered stream's proposal in
// flight answers "duplicate message id is in process"; a cut-off api may
// still send it from its reconnect buffer), so the answer stays "not
// confirmed", the key keeps its tracking id, and the client keeps its
// queued place.
func TestTakenOverKeyRefusedPublishStaysUnconfirmed(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.PublishTimeout = 400 * time.Millisecond })
	ctx := context.Background()
	sink := e.loseAcks(t)
	r := e.postKey(t, acmeToken, "k", validBody)
	if r.status != http.StatusServiceUnavailable || r.body["message"] != MsgUnconfirmed {
		t.Fatalf("first request: status %d: %s", r.status, r.raw)
	}
	_ = sink.Unsubscribe()
	first, ok := e.keyRow(t, "acme", "k")
	if !ok || first.State != store.KeyPending {
		t.Fatalf("claim after an unknown outcome: %+v (found %v)", first, ok)
	}
	// From now on JetStream refuses the subject: the stream exists (the
	// retry's look finds nothing in it) but takes no message.
	if err := createRefusingStream(ctx, e.ns.JS); err != nil {
		t.Fatal(err)
	}
	r = e.postKey(t, acmeToken, "k", validBody)
	if r.status != http.StatusServiceUnavailable || r.body["message"] != MsgUnconfirmed {
		t.Fatalf("retry that took the key over: status %d: %s; want 503 %q", r.status, r.raw, MsgUnconfirmed)
	}
	if row, ok := e.keyRow(t, "acme", "k"); !ok || row.State != store.KeyPending || row.TrackingID != first.TrackingID {
		t.Fatalf("claim after the refused retry: %+v (found %v), want pending with %s", row, ok, first.TrackingID)
	}
}

// createRefusingStream makes the STK stream again (loseAcks deleted it), as
// one that takes no message: its messages may be one byte at most.
// nats-server may answer 10049 ("error creating store for stream") while
// the deleted stream's store is still being removed (seen under load):
// that is tried again, for up to 10 s.
func createRefusingStream(ctx context.Context, js jetstream.JetStream) error {
	cfg := events.StreamConfig(1)
	cfg.MaxMsgSize = 1
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := js.CreateStream(ctx, cfg)
		var apiErr *jetstream.APIError
		if err == nil || !errors.As(err, &apiErr) || apiErr.ErrorCode != 10049 || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond) // a poll: the store goes in its own time
	}
}

// A keyed retry that takes over the claim of an api that died (or was cut
// off) mid-request, finds nothing in the stream and then meets a limit:
// the earlier api's publish may still be stored (a proposal in flight, a
// reconnect buffer), so the answer is "not confirmed: retry with the same
// key", never a 429 saying nothing was sent, which could make the client
// ask again under a new key and prompt the customer twice. The key keeps
// its tracking id.
func TestTakenOverKeyLimitedStaysUnconfirmed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		tweak func(*Options)
	}{
		{"queue cap", func(o *Options) { o.ClientMaxQueued = 1 }},
		{"phone limit", func(o *Options) { o.PhoneMaxPrompts, o.PhoneWindow = 1, time.Hour }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, tc.tweak)
			id := claimAsCrashedAPI(t, e, "k")
			accepted(t, e.postKey(t, acmeToken, "other", validBody)) // at the limit now
			e.db.MustExec(`UPDATE idempotency_keys SET lease_until = now() WHERE key = 'k'`)
			r := e.postKey(t, acmeToken, "k", validBody)
			if r.status != http.StatusServiceUnavailable || r.body["message"] != MsgUnconfirmed {
				t.Fatalf("retry that took the key over: status %d: %s; want 503 %q", r.status, r.raw, MsgUnconfirmed)
			}
			if row, ok := e.keyRow(t, "acme", "k"); !ok || row.State != store.KeyPending || row.TrackingID != id {
				t.Fatalf("claim after the limited retry: %+v (found %v), want pending with %s", row, ok, id)
			}
		})
	}
}

// A keyed retry on the same api after an unknown outcome is the same
// request: it is not counted a second time against its client's cap of
// queued requests (the phone's prompt slot is not either), so a client
// at a cap of one can still learn what became of it.
func TestRetryAfterUnknownOutcomeKeepsItsQueuedPlace(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.PublishTimeout = lostAckTimeout; o.ClientMaxQueued = 1 })
	sink := e.loseAcks(t)
	if r := e.postKey(t, acmeToken, "k", validBody); r.status != http.StatusServiceUnavailable || r.body["message"] != MsgUnconfirmed {
		t.Fatalf("first request: status %d: %s", r.status, r.raw)
	}
	_ = sink.Unsubscribe()
	if _, err := events.EnsureStream(context.Background(), e.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	row, _ := e.keyRow(t, "acme", "k")
	if got := accepted(t, e.postKey(t, acmeToken, "k", validBody)); got != row.TrackingID {
		t.Fatalf("retry answered %s, want the claimed %s", got, row.TrackingID)
	}
	if r := e.postKey(t, acmeToken, "next", validBody); r.status != http.StatusTooManyRequests || r.body["message"] != MsgQueueFull {
		t.Errorf("a second request at a cap of one: status %d: %s; want 429 %q", r.status, r.raw, MsgQueueFull)
	}
}
