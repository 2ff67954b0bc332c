package webhooks

// Delivering a task: the attempt sent, recorded, and settled, retried or
// given up.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/webhook"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// outcomeOf is an attempt's outcome label: the status class, or error.
func outcomeOf(res webhook.Result) string {
	switch {
	case res.Err != nil || res.Status < 100:
		return "error"
	case res.Status < 300:
		return "2xx"
	case res.Status < 400:
		return "3xx"
	case res.Status < 500:
		return "4xx"
	}
	return "5xx"
}

// jitter spreads d by ±20%.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// deliver makes one attempt of a task, or hands it back to wait: the task
// read (readTask), the endpoint's slot taken, the delivery and its endpoint
// read (openDelivery, liveEndpoint), and the attempt made and settled.
func (w *runner) deliver(stop, work context.Context, msg jetstream.Msg) {
	t, env, client, ok := w.readTask(msg)
	if !ok {
		return
	}
	log := w.log.With("tracking_id", env.Subject, "event", env.Type, "endpoint_id", t.EndpointID, "delivery_id", t.DeliveryID)
	// A callback_url's slots and breaker are its own: one merchant URL
	// down does not hold up the client's others.
	slot := t.EndpointID
	if t.URL != "" {
		slot += " " + t.URL
	}
	if stop.Err() != nil {
		_ = worker.HandBack(msg)
		return
	}
	// The endpoint's slot first, before any read: a task of a busy or
	// failing endpoint goes back to wait at the cost of a nak alone, so that
	// many of them cost neither Postgres nor the other endpoints anything.
	ok, busy, wait := w.eps.acquire(slot, client, time.Now())
	if !ok {
		reason := webhook.ErrTextBreakerOpen
		if busy {
			wait, reason = busyWait, webhook.ErrTextBusy
		}
		// Handed back for ever, a task would outlive its retry limit and
		// then the stream's: past the limit the delivery fails here, with
		// an attempt that says why none was made.
		if w.pastRetryLimit(msg) {
			w.giveUp(work, log, msg, t, reason)
			return
		}
		worker.Nak(log, msg, jitter(wait))
		return
	}
	attempted, success := false, false
	defer func() {
		if attempted {
			w.eps.release(slot, client, success, time.Now())
		} else {
			w.eps.cancel(slot, client)
		}
	}()
	ctx, cancel := context.WithTimeout(work, opTimeout)
	defer cancel()
	d, ok := w.openDelivery(ctx, log, msg, t)
	if !ok {
		return
	}
	ep, ok := w.liveEndpoint(ctx, work, log, msg, t, d)
	if !ok {
		return
	}
	target := ep.URL
	if ep.Kind == store.KindCallbackURL {
		// The URL recorded with the delivery; the endpoint's own is a
		// label, never called.
		target = d.URL
		log = log.With("callback_url", true)
	}
	var res webhook.Result
	res, success = w.attempt(work, log, ep, target, env.ID, t.Event)
	attempted = true
	w.settle(work, log, msg, t, d, ep, res)
}

// readTask reads msg's task and its event, and the event's client; a
// malformed one is terminated (ok false).
func (w *runner) readTask(msg jetstream.Msg) (t task, env events.Envelope, client string, ok bool) {
	if err := json.Unmarshal(msg.Data(), &t); err != nil || t.DeliveryID == 0 || t.EndpointID == "" {
		worker.Term(w.log, msg, "webhooks: malformed task")
		return t, env, "", false
	}
	env, ev, err := events.Decode(t.Event)
	if err != nil {
		worker.Term(w.log, msg, "webhooks: task's event: "+err.Error())
		return t, env, "", false
	}
	return t, env, ev.Base().Client, true
}

// liveEndpoint reads the endpoint of delivery d. One disabled or removed
// cancels the delivery (but a manual one's) and acks the task; one not read
// hands the task back. ok false: the task is settled.
func (w *runner) liveEndpoint(ctx, work context.Context, log *slog.Logger, msg jetstream.Msg, t task, d store.WebhookDelivery) (store.WebhookEndpoint, bool) {
	ep, err := w.store.WebhookEndpoint(ctx, t.EndpointID)
	if err != nil && !errors.Is(err, store.ErrWebhookEndpointNotFound) {
		log.Warn("webhook endpoint not read; retrying", "error", err)
		worker.Nak(log, msg, storeWait)
		return ep, false
	}
	if err != nil || !ep.DisabledAt.IsZero() {
		if !t.Manual {
			if err := w.store.SetWebhookDeliveryState(ctx, d.ID, store.DeliveryCancelled); err != nil {
				log.Warn("webhook delivery not cancelled; retrying", "error", err)
				worker.Nak(log, msg, storeWait)
				return ep, false
			}
		}
		if !t.Manual {
			w.cfg.Metrics.WebhookDelivery(store.DeliveryCancelled)
		}
		log.Info("webhook delivery cancelled: endpoint disabled or removed")
		worker.Ack(work, log, msg, "nothing")
		return ep, false
	}
	return ep, true
}

// pastRetryLimit: the task was first published RetryFor ago or more.
func (w *runner) pastRetryLimit(msg jetstream.Msg) bool {
	meta, err := msg.Metadata()
	if err != nil {
		return false
	}
	return time.Since(meta.Timestamp) >= w.cfg.Backoff.RetryFor
}

// giveUp records a delivery whose retries are spent without an attempt
// (its endpoint's breaker open, or busy) as failed, then acks its task.
func (w *runner) giveUp(ctx context.Context, log *slog.Logger, msg jetstream.Msg, t task, reason string) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	d, ok := w.openDelivery(ctx, log, msg, t)
	if !ok {
		return
	}
	// A redelivery an operator asked for a day ago is given up too, the
	// delivery's own state unchanged.
	a := store.WebhookAttempt{At: time.Now(), Error: reason, Manual: t.Manual}
	state, next := store.DeliveryFailed, time.Time{}
	if t.Manual {
		state, next = d.State, d.NextAttempt
	}
	if err := w.store.RecordWebhookAttempt(ctx, d.ID, a, state, next); err != nil {
		log.Warn("webhook delivery not recorded failed; retrying", "error", err)
		worker.Nak(log, msg, storeWait)
		return
	}
	if state != d.State {
		w.cfg.Metrics.WebhookDelivery(state)
	}
	log.Error("webhook delivery given up: retries spent", "error", a.Error, "attempt", d.Attempts+1, "manual", t.Manual)
	worker.Ack(ctx, log, msg, "the delivery is checked again and found failed")
}

// openDelivery reads t's delivery; ok false when msg is settled instead:
// handed back when the delivery cannot be read, acked when it is done
// already (a task redelivered after its ack was lost) and t is no manual
// redelivery. A delivery whose row is gone is recorded again
// (recordAgain).
func (w *runner) openDelivery(ctx context.Context, log *slog.Logger, msg jetstream.Msg, t task) (d store.WebhookDelivery, ok bool) {
	d, err := w.store.WebhookDeliveryByID(ctx, t.DeliveryID)
	if errors.Is(err, store.ErrWebhookDeliveryNotFound) {
		if d, ok = w.recordAgain(ctx, log, msg, t); !ok {
			return d, false
		}
		err = nil
	}
	if err != nil {
		log.Warn("webhook delivery not read; retrying", "error", err)
		worker.Nak(log, msg, storeWait)
		return d, false
	}
	if d.State != store.DeliveryPending && !t.Manual {
		worker.Ack(ctx, log, msg, "nothing: the delivery is "+d.State)
		return d, false
	}
	return d, true
}

// recordAgain records again, from t, a delivery whose row is gone: the
// fan-out records a delivery before it publishes its task, and no code
// deletes one, so the row was lost with a database restored from a backup
// older than the task, or deleted by hand. Handed back, the task would come
// back every storeWait for ever (the task stream has no age limit) and the
// merchant would never hear of the event. Recorded again (the same event and
// endpoint: the same row on every try), the delivery goes on with the
// attempts made since. A manual redelivery of a row that is gone, and a task
// whose endpoint is gone too, end here, said in the log.
func (w *runner) recordAgain(ctx context.Context, log *slog.Logger, msg jetstream.Msg, t task) (d store.WebhookDelivery, ok bool) {
	if t.Manual {
		worker.Term(log, msg, "webhooks: a manual redelivery of a delivery that is no longer recorded")
		return d, false
	}
	env, ev, err := events.Decode(t.Event)
	if err != nil {
		worker.Term(log, msg, "webhooks: task's event: "+err.Error())
		return d, false
	}
	switch _, err := w.store.WebhookEndpoint(ctx, t.EndpointID); {
	case errors.Is(err, store.ErrWebhookEndpointNotFound):
		worker.Term(log, msg, "webhooks: neither the delivery nor its endpoint is recorded")
		return d, false
	case err != nil:
		log.Warn("webhook endpoint not read; retrying", "error", err)
		worker.Nak(log, msg, storeWait)
		return d, false
	}
	p := ev.Base()
	id, err := w.store.EnsureWebhookDelivery(ctx, store.WebhookDelivery{
		EndpointID: t.EndpointID, URL: t.URL, Client: p.Client, TrackingID: p.TrackingID, EventID: env.ID, EventType: env.Type,
	})
	if err == nil {
		d, err = w.store.WebhookDeliveryByID(ctx, id)
	}
	if err != nil {
		log.Warn("webhook delivery not recorded again; retrying", "error", err)
		worker.Nak(log, msg, storeWait)
		return d, false
	}
	log.Error("webhook delivery was no longer recorded (a database restored from an older backup, or a row deleted): recorded again",
		"new_delivery_id", d.ID)
	return d, true
}

// attempt signs and posts the event to ep once.
func (w *runner) attempt(ctx context.Context, log *slog.Logger, ep store.WebhookEndpoint, url, eventID string, body []byte) (webhook.Result, bool) {
	now := time.Now()
	var secrets []webhook.Secret
	for i, sealed := range ep.Signing(now) {
		s, err := w.sealer.Open(ep.ID, sealed)
		if err != nil && i > 0 {
			// The previous secret, in its grace, sealed under a key since
			// dropped from WEBHOOK_SECRET_KEY: the current one signs alone
			// (the merchant has it since the rotation began).
			if _, seen := w.unopened.LoadOrStore(ep.ID, true); !seen {
				log.Warn("webhook previous secret does not open; signing with the current one only (stkgate-admin webhook reseal)", "error", err)
			}
			continue
		}
		if err != nil {
			log.Error("webhook secret does not open: is WEBHOOK_SECRET_KEY the one stkgate-admin sealed it with?", "error", err)
			return webhook.Result{Err: fmt.Errorf("%w: %w", webhook.ErrSigning, err)}, false
		}
		secrets = append(secrets, s)
	}
	h := http.Header{}
	h.Set(webhook.HeaderID, eventID)
	h.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(webhook.HeaderSignature, webhook.Sign(eventID, now, body, secrets...))
	res := w.client.Post(ctx, url, h, body)
	return res, succeeded(res, w.cfg.SlowAfter)
}

// succeeded is an attempt's outcome for the breaker: a 2xx within
// slowAfter. A slower 2xx delivers, but counts as a failure: endpoints that
// answer just within the timeout would otherwise hold their share of the
// handlers for ever.
func succeeded(res webhook.Result, slowAfter time.Duration) bool {
	return res.Err == nil && res.Status >= 200 && res.Status < 300 && res.Latency < slowAfter
}

// settle records the attempt and acks the task, or hands it back to wait
// for its next try.
func (w *runner) settle(ctx context.Context, log *slog.Logger, msg jetstream.Msg, t task, d store.WebhookDelivery, ep store.WebhookEndpoint, res webhook.Result) {
	now := time.Now()
	// The record (served to the client) holds a fixed text; the detail,
	// which may name internal addresses, goes to this log alone.
	a := store.WebhookAttempt{At: now.Add(-res.Latency), StatusCode: res.Status, Latency: res.Latency, Excerpt: res.Excerpt, Manual: t.Manual,
		Error: webhook.Describe(res.Err)}
	attempt := d.Attempts + 1
	w.cfg.Metrics.WebhookAttempt(outcomeOf(res), res.Latency)
	log = log.With("attempt", attempt, "status", res.Status, "latency_ms", res.Latency.Milliseconds())
	if res.Err != nil {
		log = log.With("detail", res.Err.Error())
	}
	state, next, ack := store.DeliveryPending, time.Time{}, true
	var wait time.Duration
	switch {
	case res.Err == nil && res.Status >= 200 && res.Status < 300:
		state = store.DeliveryDelivered
		log.Info("webhook delivered")
	case res.Status == http.StatusGone && ep.Kind == store.KindCallbackURL:
		// One payment's URL gone says nothing of the client's others:
		// this delivery alone is cancelled.
		state = store.DeliveryCancelled
		if t.Manual {
			state, next = d.State, d.NextAttempt
		}
		log.Warn("webhook callback_url delivery cancelled: the receiver answered 410 Gone")
	case res.Status == http.StatusGone:
		state = store.DeliveryCancelled
		if t.Manual {
			// A redelivery does not undo what was done: a delivered one
			// stays delivered; a pending one is cancelled by its own
			// task, which finds the endpoint disabled.
			state, next = d.State, d.NextAttempt
		}
		if err := w.store.DisableWebhookEndpoint(ctx, ep.ID, "the receiver answered 410 Gone"); err != nil && !errors.Is(err, store.ErrWebhookEndpointNotFound) {
			log.Warn("webhook endpoint not disabled; retrying", "error", err)
			worker.Nak(log, msg, storeWait)
			return
		}
		log.Warn("webhook endpoint disabled: the receiver answered 410 Gone")
	case t.Manual:
		// The delivery's own schedule, if any, goes on.
		state, next = d.State, d.NextAttempt
		log.Warn("webhook redelivery failed", "error", a.Error)
	default:
		var more bool
		if wait, more = w.cfg.Backoff.Next(attempt, d.CreatedAt, now); more {
			// A receiver that says when to come back (429, 503) is
			// not called sooner (webhook.MaxRetryAfter at most).
			wait = max(wait, res.RetryAfter)
			next, ack = now.Add(wait), false
			log.Warn("webhook attempt failed; retrying", "error", a.Error, "retry_in", wait.Round(time.Millisecond).String())
		} else {
			state = store.DeliveryFailed
			log.Error("webhook delivery failed: retries spent", "error", a.Error)
		}
	}
	if err := w.store.RecordWebhookAttempt(ctx, d.ID, a, state, next); err != nil {
		// Acked, the task would leave its delivery pending for ever: it
		// is handed back, and attempted again (at least once: a receiver
		// may get the same webhook-id twice).
		log.Error("webhook attempt not recorded; retrying", "error", err)
		worker.Nak(log, msg, storeWait)
		return
	}
	if ack {
		if state != d.State {
			w.cfg.Metrics.WebhookDelivery(state)
		}
		worker.Ack(ctx, log, msg, "the delivery is checked again and found "+state)
		return
	}
	worker.Nak(log, msg, wait)
}
