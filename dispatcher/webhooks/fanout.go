package webhooks

// The fan-out: each STK event recorded as a delivery per endpoint that
// wants it, and published as a task.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/webhook"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// fanOut makes the deliveries of one STK event.
func (w *runner) fanOut(stop, work context.Context, msg jetstream.Msg) {
	env, ev, err := events.Decode(msg.Data())
	if err != nil {
		worker.Term(w.log, msg, "webhooks: "+err.Error())
		return
	}
	p := ev.Base()
	log := w.log.With("tracking_id", p.TrackingID, "event", env.Type)
	ctx, cancel := context.WithTimeout(work, opTimeout)
	defer cancel()
	eps, err := w.store.WebhookEndpointsFor(ctx, p.Client, env.Type)
	if err != nil {
		log.Warn("webhook endpoints not read; retrying", "error", err)
		worker.Nak(log, msg, storeWait)
		return
	}
	for _, ep := range eps {
		// An endpoint added after the event (a backlog read late) is not
		// told of what happened before it existed.
		if ep.CreatedAt.After(env.Time) {
			continue
		}
		url := ""
		if ep.Kind == store.KindCallbackURL {
			if url, err = w.callbackURL(ctx, log, p.TrackingID); err != nil {
				log.Warn("webhook callback_url not read; retrying", "error", err)
				worker.Nak(log, msg, storeWait)
				return
			}
			if url == "" {
				continue // the payment was requested without one
			}
		}
		id, err := w.store.EnsureWebhookDelivery(ctx, store.WebhookDelivery{
			EndpointID: ep.ID, URL: url, Client: p.Client, TrackingID: p.TrackingID, EventID: env.ID, EventType: env.Type,
		})
		if err == nil {
			err = w.publishTask(ctx, task{DeliveryID: id, EndpointID: ep.ID, Event: msg.Data(), URL: url}, webhook.TaskMsgID(env.ID, ep.ID))
		}
		if err != nil {
			log.Warn("webhook delivery not made; retrying", "endpoint_id", ep.ID, "error", err)
			worker.Nak(log, msg, storeWait)
			return
		}
	}
	worker.Ack(work, log, msg, "the event's deliveries are made again (the same tasks: dropped as duplicates)")
}

// callbackURL is the callback_url of trackingID's stk.requested, "" when
// it had none. It is read from the STK stream (kept RequestRetention,
// longer than any payment takes), asked of the leader so that a replica a
// moment behind cannot drop it; the api checked it and the client's
// opt-in, and the Client checks its address again at every connection.
func (w *runner) callbackURL(ctx context.Context, log *slog.Logger, trackingID string) (string, error) {
	raw, err := events.LastMsgFromLeader(ctx, w.js, events.StreamName, events.Subject(events.TypeRequested, trackingID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		log.Warn("webhook callback_url: no stk.requested in the stream; none delivered")
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read stk.requested: %w", err)
	}
	_, ev, err := events.Decode(raw.Data)
	if err != nil {
		log.Warn("webhook callback_url: stk.requested does not decode; none delivered", "error", err)
		return "", nil
	}
	req, _ := ev.(events.Requested)
	return req.CallbackURL, nil
}

func (w *runner) publishTask(ctx context.Context, t task, msgID string) error {
	body, err := json.Marshal(t)
	if err != nil {
		return err
	}
	_, err = w.js.Publish(ctx, webhook.TaskSubject(t.EndpointID), body, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(TaskStreamName))
	if err != nil {
		return fmt.Errorf("publish webhook task: %w", err)
	}
	return nil
}
