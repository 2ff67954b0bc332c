package api

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/stkgate/stkgate/events"
)

// TestAnotherClientsIDCostsAsAnUnknownOne: a poll of another client's
// tracking id asks JetStream as many times as a poll of an unknown one,
// so that its 404 is not told apart by its time (an unknown id's
// "not found" is confirmed with the stream's leader: a round trip more
// than the hit of another client's stk.requested, which told a client
// that the id exists). The requests are counted on JetStream's API
// subjects.
func TestAnotherClientsIDCostsAsAnUnknownOne(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	pub := &events.Publisher{JS: e.ns.JS, Source: EventSource}
	acmes, own := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()
	for _, id := range []string{acmes, own} {
		if _, err := pub.Publish(context.Background(), events.Requested{Payment: payment(id, "acme")}); err != nil {
			t.Fatal(err)
		}
	}
	nc, err := nats.Connect(e.ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync("$JS.API.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// requests is how many JetStream API requests a poll of id by token
	// made, and its status.
	requests := func(token, id string) (int, int) {
		t.Helper()
		r := e.get(t, token, id)
		// The poll's requests reached the server before its answer; the
		// flush's round trip brings every copy of them to sub.
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		n, _, err := sub.Pending()
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			if _, err := sub.NextMsg(0); err != nil {
				t.Fatal(err)
			}
		}
		return n, r.status
	}
	if _, status := requests(acmeToken, own); status != http.StatusOK { // looks the stream up, once
		t.Fatalf("own id from the stream: %d", status)
	}
	other, status := requests(globexToken, acmes)
	if status != http.StatusNotFound {
		t.Fatalf("another client's id: %d, want 404", status)
	}
	unknown, status := requests(globexToken, uuid.Must(uuid.NewV7()).String())
	if status != http.StatusNotFound {
		t.Fatalf("unknown id: %d, want 404", status)
	}
	if other != unknown {
		t.Errorf("another client's id made %d JetStream requests, an unknown one %d: the 404s are told apart by their time", other, unknown)
	}
}
