package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
)

// TestCallbackURLOptIn: a client opts in once (its callback_url endpoint
// made with the first opt-in alone), opts out, and the endpoint is neither
// counted among its endpoints nor told of events by WebhookEndpointsFor's
// ordinary rows.
func TestCallbackURLOptIn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := store.New(pgtest.New(t))
	tok, d := newToken(t)
	if err := s.CreateClient(ctx, "shop", d, store.TokenID(tok)); err != nil {
		t.Fatal(err)
	}
	newEP := func() store.WebhookEndpoint {
		return store.WebhookEndpoint{ID: uuid.NewString(), Client: "shop", Secret: []byte("sealed-cb")}
	}
	for _, c := range []struct {
		name        string
		client      string
		on          bool
		wantCreated bool
		wantErr     error
		wantAllowed bool
	}{
		{"unknown client", "nobody", true, false, store.ErrClientNotFound, false},
		{"first opt-in makes the endpoint", "shop", true, true, nil, true},
		{"second opt-in keeps it", "shop", true, false, nil, true},
		{"opt-out", "shop", false, false, nil, false},
		{"opt-in again keeps the secret", "shop", true, false, nil, true},
	} {
		ep, created, err := s.SetCallbackURLAllowed(ctx, c.client, c.on, newEP())
		if !errors.Is(err, c.wantErr) || created != c.wantCreated {
			t.Fatalf("%s: created %v, %v; want %v, %v", c.name, created, err, c.wantCreated, c.wantErr)
		}
		if err == nil && (ep.Kind != store.KindCallbackURL || string(ep.Secret) != "sealed-cb") {
			t.Errorf("%s: endpoint %+v", c.name, ep)
		}
		allowed, err := s.CallbackURLAllowed(ctx, c.client)
		if err != nil || allowed != c.wantAllowed {
			t.Errorf("%s: CallbackURLAllowed = %v, %v; want %v", c.name, allowed, err, c.wantAllowed)
		}
	}
	// API_TOKENS clients have no row: never allowed.
	if allowed, err := s.CallbackURLAllowed(ctx, "env-client"); err != nil || allowed {
		t.Errorf("CallbackURLAllowed(env-client) = %v, %v", allowed, err)
	}
	// The callback endpoint takes no place among the ten.
	for range store.MaxWebhookEndpoints {
		addEndpoint(t, s, "shop", "https://shop.example.com/")
	}
	eps, err := s.WebhookEndpointsFor(ctx, "shop", "stk.completed")
	if err != nil {
		t.Fatal(err)
	}
	var cb []store.WebhookEndpoint
	for _, e := range eps {
		if e.Kind == store.KindCallbackURL {
			cb = append(cb, e)
		}
	}
	if len(eps) != store.MaxWebhookEndpoints+1 || len(cb) != 1 {
		t.Fatalf("WebhookEndpointsFor = %d endpoints, %d callback_url; want %d, 1", len(eps), len(cb), store.MaxWebhookEndpoints+1)
	}

	// A delivery to a request's URL is listed with that URL.
	id, err := s.EnsureWebhookDelivery(ctx, store.WebhookDelivery{
		EndpointID: cb[0].ID, URL: "https://pay.shop.example/cb/1", Client: "shop",
		TrackingID: "t1", EventID: "t1:completed", EventType: "stk.completed",
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.WebhookDeliveryByID(ctx, id)
	if err != nil || got.URL != "https://pay.shop.example/cb/1" {
		t.Errorf("delivery URL = %q, %v", got.URL, err)
	}
	ds, err := s.WebhookDeliveries(ctx, "shop", "t1")
	if err != nil || len(ds) != 1 || ds[0].URL != "https://pay.shop.example/cb/1" {
		t.Errorf("WebhookDeliveries = %+v, %v", ds, err)
	}
}
