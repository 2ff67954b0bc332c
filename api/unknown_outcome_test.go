package api

import (
	"context"
	"net/http"
	"testing"
	"time"

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
