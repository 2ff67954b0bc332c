package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
)

func addEndpoint(t *testing.T, s *store.Store, client, url string, evs ...string) store.WebhookEndpoint {
	t.Helper()
	if len(evs) == 0 {
		evs = []string{"stk.completed"}
	}
	e := store.WebhookEndpoint{ID: uuid.NewString(), Client: client, URL: url, Events: evs, Secret: []byte("sealed-1")}
	if err := s.AddWebhookEndpoint(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestWebhookEndpoints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := store.New(pgtest.New(t))
	a := addEndpoint(t, s, "shop", "https://shop.example.com/a")
	addEndpoint(t, s, "shop", "https://shop.example.com/b", "stk.completed", "stk.requested")
	addEndpoint(t, s, "other", "https://other.example.com/")

	got, err := s.WebhookEndpoints(ctx, "shop")
	if err != nil || len(got) != 2 {
		t.Fatalf("WebhookEndpoints(shop) = %d, %v; want 2", len(got), err)
	}
	for typ, want := range map[string]int{"stk.completed": 2, "stk.requested": 1, "stk.dispatched": 0} {
		got, err := s.WebhookEndpointsFor(ctx, "shop", typ)
		if err != nil || len(got) != want {
			t.Errorf("WebhookEndpointsFor(shop, %s) = %d, %v; want %d", typ, len(got), err, want)
		}
	}

	// Rotation: the old secret signs too until the grace ends.
	if err := s.RotateWebhookSecret(ctx, a.ID, []byte("sealed-2"), time.Hour); err != nil {
		t.Fatal(err)
	}
	e, err := s.WebhookEndpoint(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Secret) != "sealed-2" || string(e.PreviousSecret) != "sealed-1" || time.Until(e.PreviousExpiresAt) < 59*time.Minute {
		t.Errorf("after rotation: secret %q, previous %q until %s", e.Secret, e.PreviousSecret, e.PreviousExpiresAt)
	}
	if sec := e.Signing(time.Now()); len(sec) != 2 || sec[1] == nil {
		t.Errorf("Signing during the grace = %q, want both", sec)
	}
	if sec := e.Signing(time.Now().Add(2 * time.Hour)); len(sec) != 1 {
		t.Errorf("Signing after the grace = %q, want the new one", sec)
	}

	// Disabled, then removed: no longer delivered to.
	if err := s.DisableWebhookEndpoint(ctx, a.ID, "gone"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.WebhookEndpointsFor(ctx, "shop", "stk.completed"); len(got) != 1 {
		t.Errorf("a disabled endpoint is still delivered to")
	}
	if err := s.RemoveWebhookEndpoint(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveWebhookEndpoint(ctx, a.ID); !errors.Is(err, store.ErrWebhookEndpointNotFound) {
		t.Errorf("removing twice = %v", err)
	}
	if err := s.RotateWebhookSecret(ctx, uuid.NewString(), []byte("x"), 0); !errors.Is(err, store.ErrWebhookEndpointNotFound) {
		t.Errorf("rotating an unknown endpoint = %v", err)
	}
	if got, _ := s.WebhookEndpoints(ctx, "shop"); len(got) != 1 {
		t.Errorf("a removed endpoint is still listed")
	}
}

func TestWebhookEndpointsBounded(t *testing.T) {
	t.Parallel()
	s := store.New(pgtest.New(t))
	for range store.MaxWebhookEndpoints {
		addEndpoint(t, s, "shop", "https://shop.example.com/")
	}
	e := store.WebhookEndpoint{ID: uuid.NewString(), Client: "shop", URL: "https://shop.example.com/", Events: []string{"stk.completed"}, Secret: []byte("x")}
	if err := s.AddWebhookEndpoint(context.Background(), e); !errors.Is(err, store.ErrTooManyWebhookEndpoints) {
		t.Errorf("endpoint %d = %v, want ErrTooManyWebhookEndpoints", store.MaxWebhookEndpoints+1, err)
	}
}

func TestWebhookDeliveries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := store.New(pgtest.New(t))
	ep := addEndpoint(t, s, "shop", "https://shop.example.com/")
	d := store.WebhookDelivery{EndpointID: ep.ID, Client: "shop", TrackingID: "t1", EventID: "t1:completed", EventType: "stk.completed"}
	id, err := s.EnsureWebhookDelivery(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.EnsureWebhookDelivery(ctx, d)
	if err != nil || again != id {
		t.Fatalf("EnsureWebhookDelivery twice = %d, %v; want the same %d", again, err, id)
	}
	at := time.Now()
	if err := s.RecordWebhookAttempt(ctx, id, store.WebhookAttempt{At: at, Latency: 30 * time.Millisecond, Error: "connection refused"}, store.DeliveryPending, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordWebhookAttempt(ctx, id, store.WebhookAttempt{At: at, StatusCode: 200, Latency: 12 * time.Millisecond, Excerpt: "ok"}, store.DeliveryDelivered, time.Time{}); err != nil {
		t.Fatal(err)
	}
	got, err := s.WebhookDeliveries(ctx, "shop", "t1")
	if err != nil || len(got) != 1 {
		t.Fatalf("WebhookDeliveries = %d, %v", len(got), err)
	}
	g := got[0]
	if g.State != store.DeliveryDelivered || g.Attempts != 2 || len(g.AttemptLog) != 2 || g.URL != ep.URL {
		t.Errorf("delivery = %+v", g)
	}
	if g.AttemptLog[0].Error != "connection refused" || g.AttemptLog[0].StatusCode != 0 || g.AttemptLog[1].StatusCode != 200 || g.AttemptLog[1].Excerpt != "ok" {
		t.Errorf("attempts = %+v", g.AttemptLog)
	}
	if other, _ := s.WebhookDeliveries(ctx, "other", "t1"); len(other) != 0 {
		t.Error("another client sees the delivery")
	}
}
