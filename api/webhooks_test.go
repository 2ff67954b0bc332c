package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
)

// addDelivery records a delivery of trackingID's stk.completed to a new
// endpoint of client, with attempts answered by statuses (0: no answer).
func addDelivery(t *testing.T, s *store.Store, client, trackingID string, statuses ...int) string {
	t.Helper()
	ctx := context.Background()
	ep := store.WebhookEndpoint{ID: uuid.NewString(), Client: client, URL: "https://" + client + ".example.com/hooks", Events: []string{"stk.completed"}, Secret: []byte("sealed")}
	if err := s.AddWebhookEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	id, err := s.EnsureWebhookDelivery(ctx, store.WebhookDelivery{EndpointID: ep.ID, Client: client, TrackingID: trackingID, EventID: trackingID + ":completed", EventType: "stk.completed"})
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range statuses {
		a := store.WebhookAttempt{At: fixedNow.Add(time.Duration(i) * time.Minute), StatusCode: st, Latency: 42 * time.Millisecond}
		state, next := store.DeliveryPending, fixedNow.Add(time.Hour)
		switch {
		case st == 0:
			a.Error = "dial tcp 203.0.113.10:443: connect: connection refused"
		case st >= 200 && st < 300:
			state, next, a.Excerpt = store.DeliveryDelivered, time.Time{}, "ok"
		default:
			a.Excerpt = "<html>busy</html>"
		}
		if err := s.RecordWebhookAttempt(ctx, id, a, state, next); err != nil {
			t.Fatal(err)
		}
	}
	return ep.ID
}

func TestWebhookDeliveries(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tid := uuid.NewString()
	epID := addDelivery(t, e.store, "acme", tid, 0, 503, 200)
	addDelivery(t, e.store, "globex", tid)

	get := func(token, query string) response {
		return e.do(t, newRequest(http.MethodGet, WebhookDeliveriesPath+query, token, "", ""))
	}
	r := get(acmeToken, "?tracking_id="+tid)
	if r.status != http.StatusOK || r.body["success"] != true {
		t.Fatalf("GET = %d %s", r.status, r.raw)
	}
	data := r.body["data"].([]any)
	if len(data) != 1 {
		t.Fatalf("%d deliveries, want acme's one: %s", len(data), r.raw)
	}
	d := data[0].(map[string]any)
	if d["endpoint_id"] != epID || d["state"] != "delivered" || d["attempts"] != float64(3) || d["event_id"] != tid+":completed" || d["url"] != "https://acme.example.com/hooks" {
		t.Errorf("delivery = %v", d)
	}
	log := d["attempt_log"].([]any)
	first, second, third := log[0].(map[string]any), log[1].(map[string]any), log[2].(map[string]any)
	if first["status_code"] != nil || first["error"] == "" || second["status_code"] != float64(503) || second["response_excerpt"] != "<html>busy</html>" || third["status_code"] != float64(200) || third["latency_ms"] != float64(42) {
		t.Errorf("attempts = %v", log)
	}

	// Another client's, an unknown tracking id: an empty list, as if none.
	if r := get(globexToken, "?tracking_id="+tid); r.status != http.StatusOK || len(r.body["data"].([]any)) != 1 {
		t.Errorf("globex's own: %d %s", r.status, r.raw)
	}
	if r := get(acmeToken, "?tracking_id="+uuid.NewString()); r.status != http.StatusOK || len(r.body["data"].([]any)) != 0 {
		t.Errorf("unknown tracking id: %d %s", r.status, r.raw)
	}
	for _, q := range []string{"", "?tracking_id=", "?tracking_id=nope", "?tracking_id=" + tid + "&tracking_id=" + tid, "?tracking_id=" + tid + "&x=1", "?tracking_id=%zz"} {
		if r := get(acmeToken, q); r.status != http.StatusBadRequest || r.body["errors"] == nil {
			t.Errorf("GET %q = %d %s, want 400 naming the parameter", q, r.status, r.raw)
		}
	}
	if r := get("", "?tracking_id="+tid); r.status != http.StatusUnauthorized {
		t.Errorf("no token: %d", r.status)
	}
}

// TestWebhookDeliveriesHideInternalErrors: an attempt's error is served
// as one of the fixed texts; a free text stored by an older worker (a
// resolver's error naming its server) is not served.
func TestWebhookDeliveriesHideInternalErrors(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tid := uuid.NewString()
	addDelivery(t, e.store, "acme", tid, 0)
	r := e.do(t, newRequest(http.MethodGet, WebhookDeliveriesPath+"?tracking_id="+tid, acmeToken, "", ""))
	if r.status != http.StatusOK {
		t.Fatalf("GET = %d %s", r.status, r.raw)
	}
	if strings.Contains(string(r.raw), "203.0.113.10") || strings.Contains(string(r.raw), "dial tcp") {
		t.Errorf("served the stored error's detail: %s", r.raw)
	}
}
