package api

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/stkgate/stkgate/events"
)

// A GET right after a 202 is answered from the stream (the projector is not
// running here). Direct gets may be answered by a replica a moment behind
// the leader; its "not found" must not become a 404 for an accepted id.
func TestGetAfterAcceptedWithALaggingReplica(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	e.ns.LaggingReplica(t)
	const n = 64
	for i := range n {
		r := e.post(t, acmeToken, validBody)
		// A 503 is a publish whose outcome is unknown (CI saw one wait out
		// its deadline under load); this test is about GETs after a 202, so
		// it sends another request.
		for try := 0; r.status == http.StatusServiceUnavailable && try < 3; try++ {
			r = e.post(t, acmeToken, validBody)
		}
		if r.status != http.StatusAccepted {
			t.Fatalf("POST %d = %d %s", i, r.status, r.raw)
		}
		id, _ := r.body["tracking_id"].(string)
		// A 503 (a read that timed out on a loaded machine) says retry,
		// as a client would; a 404 would tell it the id does not exist.
		g := e.get(t, acmeToken, id)
		for try := 0; g.status == http.StatusServiceUnavailable && try < 3; try++ {
			g = e.get(t, acmeToken, id)
		}
		if g.status != http.StatusOK {
			t.Fatalf("GET %d of an accepted id = %d %s", i, g.status, g.raw)
		}
	}
}

// An Idempotency-Key taken over from an api that died after publishing: the
// look-up that decides whether to publish again must not take a lagging
// replica's "not found" for the truth.
func TestIdempotencyTakeOverWithALaggingReplica(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	e.ns.LaggingReplica(t)
	pub := &events.Publisher{JS: e.ns.JS, Source: EventSource}
	for i := range 32 {
		key := fmt.Sprintf("k%d", i)
		id := claimAsCrashedAPI(t, e, key)
		if _, err := pub.Publish(context.Background(), events.Requested{Payment: payment(id, "acme")}); err != nil {
			t.Fatal(err)
		}
		e.db.MustExec(`UPDATE idempotency_keys SET lease_until = now() WHERE key = $1`, key)
		r := e.postKey(t, acmeToken, key, validBody)
		if got := accepted(t, r); got != id || r.header.Get(ReplayedHeader) != "true" {
			t.Fatalf("take-over %d answered %s (replayed %q), want %s replayed: the stored request was not found", i, got, r.header.Get(ReplayedHeader), id)
		}
	}
}
