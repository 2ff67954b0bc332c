package api

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

// How sync mode looks at the read model: fast right after an event said the
// answer is there (the projector writes it within milliseconds), slowly
// otherwise, in case the event itself was missed (a NATS reconnect drops
// core messages).
const (
	pollFirst = 5 * time.Millisecond
	pollMax   = 200 * time.Millisecond
	pollIdle  = 500 * time.Millisecond
)

// syncWait is a subscription to every event of one payment.
type syncWait struct {
	sub *nats.Subscription
	ch  chan *nats.Msg
}

// listen subscribes to stk.*.<id>.
func (h *Handler) listen(id string) (*syncWait, error) {
	// A payment has three events at most; the spare room only guards
	// against a repeated publish.
	w := &syncWait{ch: make(chan *nats.Msg, 16)}
	sub, err := h.conn.ChanSubscribe(events.Subject("stk.*", id), w.ch)
	if err != nil {
		return nil, err
	}
	w.sub = sub
	return w, nil
}

func (w *syncWait) close() { _ = w.sub.Unsubscribe() }

// await waits until Daraja has answered the push of id (an stk.dispatched
// or stk.completed) and the read model shows it, and returns the record. It
// gives up (false) at deadline, when the client goes away (ctx) or when the
// handler stops waiting.
func (h *Handler) await(ctx context.Context, w *syncWait, client, id string, deadline time.Time) (store.Record, bool) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	stop := context.AfterFunc(h.stopped, cancel)
	defer stop()

	idle := time.NewTicker(pollIdle)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			h.log.Info("sync mode: no answer from Daraja in time; answering as async",
				"tracking_id", id, "reason", context.Cause(ctx))
			return store.Record{}, false
		case m := <-w.ch:
			stage, ok := answerStage(m.Subject, id)
			if !ok {
				continue // our own stk.requested
			}
			return h.pollUntil(ctx, client, id, stage)
		case <-idle.C:
			if rec, err := h.store.Get(ctx, client, id); err == nil && rec.Stage >= store.StageDispatched {
				return rec, true
			}
		}
	}
}

// answerStage is the read model stage an event of Daraja's answer leads to.
func answerStage(subject, id string) (int, bool) {
	switch strings.TrimSuffix(subject, "."+id) {
	case events.TypeDispatched:
		return store.StageDispatched, true
	case events.TypeCompleted:
		return store.StageCompleted, true
	}
	return 0, false
}

// pollUntil reads the record until it has reached stage or ctx ends.
func (h *Handler) pollUntil(ctx context.Context, client, id string, stage int) (store.Record, bool) {
	wait := pollFirst
	var lastErr error
	for {
		rec, err := h.store.Get(ctx, client, id)
		switch {
		case err == nil && rec.Stage >= stage:
			return rec, true
		case err != nil && !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil:
			lastErr = err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			attrs := []any{"tracking_id", id}
			if lastErr != nil {
				attrs = append(attrs, "last_error", lastErr)
			}
			h.log.Info("sync mode: Daraja answered but the read model did not show it in time; answering as async", attrs...)
			return store.Record{}, false
		case <-t.C:
		}
		wait = min(2*wait, pollMax)
	}
}
