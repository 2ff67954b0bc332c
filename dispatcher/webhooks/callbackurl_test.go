package webhooks_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/dispatcher/webhooks/merchant"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/webhook"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// callbackClient makes the database client name, opted in to callback_url
// as stkgate-admin client allow-callback-url does, and returns its
// callback_url endpoint and secret.
func (h *harness) callbackClient(t *testing.T, name string) (store.WebhookEndpoint, webhook.Secret) {
	t.Helper()
	ctx := context.Background()
	tok, _ := store.NewToken()
	if err := h.store.CreateClient(ctx, name, store.DigestOf(tok), store.TokenID(tok)); err != nil {
		t.Fatal(err)
	}
	sec, _ := webhook.NewSecret()
	id := uuid.NewString()
	sealed, err := h.sealer.Seal(id, sec)
	if err != nil {
		t.Fatal(err)
	}
	ep, created, err := h.store.SetCallbackURLAllowed(ctx, name, true, store.WebhookEndpoint{ID: id, Secret: sealed})
	if err != nil || !created {
		t.Fatalf("opt in: %v, %v", created, err)
	}
	return ep, sec
}

// requestedWith is ev's stk.requested with callbackURL.
func requestedWith(ev events.Completed, callbackURL string) events.Requested {
	return events.Requested{Payment: ev.Payment, CallbackURL: callbackURL}
}

// TestCallbackURLDelivered: a payment requested with a callback_url has its
// stk.completed delivered there, signed with the client's callback_url
// secret (verified by the docs' snippet), retried like any delivery and
// recorded with its URL; the client's endpoints get it as before, and a
// payment without one sends nothing there.
func TestCallbackURLDelivered(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	cb := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	})
	hooks := newReceiver(t, nil)
	cbEP, cbSec := h.callbackClient(t, "shop")
	_, epSec := h.endpoint(t, "shop", hooks.URL+"/hooks")

	ev := completed("shop")
	url := cb.URL + "/stk/order-1?n=1"
	h.publish(t, requestedWith(ev, url))
	h.publish(t, ev)
	wait.For(t, "the callback_url delivered on its second attempt", func() bool {
		for _, d := range h.deliveries(t, "shop", ev.TrackingID) {
			if d.URL == url {
				return d.State == store.DeliveryDelivered
			}
		}
		return false
	})
	got := cb.requests()
	if len(got) != 2 {
		t.Fatalf("callback_url got %d requests, want 2 (a 503, then the delivery)", len(got))
	}
	last := got[1]
	if err := merchant.VerifyWebhook(cbSec.String(), last.header, last.body, time.Now()); err != nil {
		t.Errorf("the callback_url secret does not verify the delivery: %v", err)
	}
	if merchant.VerifyWebhook(epSec.String(), last.header, last.body, time.Now()) == nil {
		t.Error("an endpoint's secret verifies a callback_url delivery")
	}
	env, _, err := events.Decode(last.body)
	if err != nil || env.Type != events.TypeCompleted || last.header.Get("webhook-id") != env.ID {
		t.Errorf("body %s, webhook-id %s: want the stk.completed envelope", last.body, last.header.Get("webhook-id"))
	}
	ds := h.deliveries(t, "shop", ev.TrackingID)
	if len(ds) != 2 {
		t.Fatalf("%d deliveries, want the endpoint's and the callback_url's", len(ds))
	}
	for _, d := range ds {
		switch d.URL {
		case url:
			if d.EndpointID != cbEP.ID || d.Attempts != 2 || d.AttemptLog[0].StatusCode != 503 || d.AttemptLog[1].StatusCode != 200 {
				t.Errorf("callback_url delivery = %+v", d)
			}
		case hooks.URL + "/hooks":
		default:
			t.Errorf("a delivery to %s", d.URL)
		}
	}
	wait.For(t, "the endpoint's delivery", func() bool { return len(hooks.requests()) == 1 })

	// A payment without a callback_url: the endpoint alone.
	plain := completed("shop")
	h.publish(t, events.Requested{Payment: plain.Payment})
	h.publish(t, plain)
	wait.For(t, "the endpoint's second delivery", func() bool { return len(hooks.requests()) == 2 })
	if ds := h.deliveries(t, "shop", plain.TrackingID); len(ds) != 1 || ds[0].URL != hooks.URL+"/hooks" {
		t.Errorf("deliveries of a payment without callback_url = %+v", ds)
	}
	if n := len(cb.requests()); n != 2 {
		t.Errorf("callback_url got %d requests, want still 2", n)
	}
}

// TestCallbackURLCheckedAtConnect: a callback_url the api let through
// whose address is refused when the worker connects (a name that resolves
// elsewhere since) is not called: the attempt records the refusal. And a
// 410 from one callback_url cancels that delivery alone: the client's
// other payments' URLs are still called.
func TestCallbackURLCheckedAtConnect(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.callbackClient(t, "shop")
	ev := completed("shop")
	h.publish(t, requestedWith(ev, "http://10.0.0.1/cb"))
	h.publish(t, ev)
	wait.For(t, "the refused attempt recorded", func() bool {
		ds := h.deliveries(t, "shop", ev.TrackingID)
		return len(ds) == 1 && len(ds[0].AttemptLog) > 0
	})
	d := h.deliveries(t, "shop", ev.TrackingID)[0]
	if a := d.AttemptLog[0]; a.StatusCode != 0 || a.Error != "refused address: private" || d.URL != "http://10.0.0.1/cb" {
		t.Errorf("attempt = %+v on %s, want refused address: private", a, d.URL)
	}

	gone := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	ok := newReceiver(t, nil)
	first, second := completed("shop"), completed("shop")
	h.publish(t, requestedWith(first, gone.URL))
	h.publish(t, first)
	wait.For(t, "the 410 delivery cancelled", func() bool {
		ds := h.deliveries(t, "shop", first.TrackingID)
		return len(ds) == 1 && ds[0].State == store.DeliveryCancelled
	})
	h.publish(t, requestedWith(second, ok.URL))
	h.publish(t, second)
	wait.For(t, "the next payment's callback_url called", func() bool { return len(ok.requests()) == 1 })
}
