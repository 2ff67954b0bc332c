package api

// POST /api/stk-push: a request read, checked, limited, published as
// stk.requested, and answered (at once, or once the projector stored it).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

// readBody reads at most MaxBodyBytes of the request body.
func readBody(c echo.Context) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > MaxBodyBytes {
		return nil, errTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, errTooLarge
		}
		return nil, badRequest("The request body could not be read.")
	}
	return body, nil
}

type acceptedBody struct {
	Success    bool   `json:"success"`
	TrackingID string `json:"tracking_id"`
	Message    string `json:"message"`
}

type recordBody struct {
	Success bool       `json:"success"`
	Data    RecordView `json:"data"`
}

// create is POST /api/stk-push: validate, publish stk.requested and wait
// for JetStream's ack, then answer 202 (or, in sync mode, the record once
// Daraja answered). With an Idempotency-Key, the key is claimed first and a
// request that repeats an accepted one is answered from it (see
// idempotency.go).
func (h *Handler) create(c echo.Context) error {
	start := time.Now()
	client := clientOf(c)
	key, err := idempotencyKeyOf(c.Request().Header)
	if err != nil {
		return err
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	req, err := DecodeRequest(c.Request().Header.Get(echo.HeaderContentType), body)
	if err != nil {
		return err
	}
	uid, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("new tracking id: %w", err)
	}
	id := uid.String()
	if key == "" {
		if err := h.checkCallbackURL(c.Request().Context(), client, &req); err != nil {
			return err
		}
		setTrackingID(c, id)
		return h.accept(c, client, id, req, start, nil)
	}
	// Under a key, only the callback_url's form is checked before the
	// claim (its normal form is part of the key's request): the opt-in
	// and the host's addresses may have changed since the key's request
	// was accepted, and a retry of it is answered as accepted whatever
	// they say now. A 422 would tell a client whose answer was lost that
	// nothing was, and it would ask again under a new key.
	if err := h.normaliseCallbackURL(&req); err != nil {
		return err
	}

	id, held, takenOver, err := h.claimKey(c.Request().Context(), client, key, req, id)
	if id != "" {
		setTrackingID(c, id)
	}
	if err != nil {
		return err
	}
	if held == nil {
		return h.replay(c, client, id)
	}
	if takenOver {
		// The api that held the key died or did not learn whether its
		// publish was stored. Beyond JetStream's duplicate window a second
		// publish would be stored again, so look first.
		stored, err := h.requestedStored(c.Request().Context(), id)
		if err != nil {
			h.settleKey(c, client, id, held, err)
			return &unavailableError{message: MsgUnconfirmed, cause: err}
		}
		h.log.Info("idempotency key taken over", "tracking_id", id, "client", client, "already_stored", stored)
		if stored {
			h.settleKey(c, client, id, held, nil)
			return h.replay(c, client, id)
		}
	}
	checked := req
	if err := h.checkCallbackURL(c.Request().Context(), client, &checked); err != nil {
		h.settleKey(c, client, id, held, fmt.Errorf("%w: %w", errNotSent, err))
		return err
	}
	return h.accept(c, client, id, req, start, held)
}

// requestedStored reports whether stk.requested of id is in the stream.
func (h *Handler) requestedStored(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
	defer cancel()
	s, err := h.stkStream(ctx)
	if err != nil {
		return false, err
	}
	// Confirmed with the leader: a lagging replica's "not found" would
	// publish the request again beyond the duplicate window.
	_, err = events.LastMsg(ctx, h.js, s, events.Subject(events.TypeRequested, id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, fmt.Errorf("look up stk.requested: %w", err)
}

// replay answers a request whose Idempotency-Key stands for an accepted
// request: 202 with its tracking id, or in sync mode its record as 200 once
// Daraja has answered it (as the first request would have been answered),
// without waiting again.
func (h *Handler) replay(c echo.Context, client, id string) error {
	c.Response().Header().Set(ReplayedHeader, "true")
	if h.mode == ModeSync {
		ctx, cancel := context.WithTimeout(c.Request().Context(), readTimeout)
		defer cancel()
		rec, err := h.currentRecord(ctx, client, id)
		switch {
		case err == nil && rec.Stage >= store.StageDispatched:
			return c.JSON(http.StatusOK, recordBody{Success: true, Data: ViewOf(rec)})
		case err != nil && !errors.Is(err, store.ErrNotFound):
			h.log.Warn("sync mode: cannot read the record of a replayed request; answering as async",
				"tracking_id", id, "error", err)
		}
	}
	h.log.Info("stk push replayed for its idempotency key", "tracking_id", id, "client", client)
	c.Response().Header().Set(echo.HeaderLocation, RecordPath+id)
	return c.JSON(http.StatusAccepted, acceptedBody{Success: true, TrackingID: id, Message: MsgAccepted})
}

// accept publishes stk.requested of id and answers. held is the request's
// idempotency key claim, nil without a key: it is completed, released or
// left for a retry according to the publish's outcome.
//
// Its steps: listenSync, takeLimits, publishRequested, then the answer
// (answerAccepted).
//
// The payment's logger (h.log with its tracking_id and client) is made only
// for a line on a failure path (paymentLog): made for every request, it
// formatted both attributes for a handler clone that the accepted line,
// which names them itself, did not need.
func (h *Handler) accept(c echo.Context, client, id string, req Request, start time.Time, held *heldKey) error {
	wait := h.listenSync(client, id)
	if wait != nil {
		defer wait.close()
	}
	queued, err := h.takeLimits(c, client, id, req, held)
	if err != nil {
		return err
	}
	ack, err := h.publishRequested(c, client, id, req, held, queued)
	if err != nil {
		return err
	}
	// Typed attrs, the line's bytes as Info's: Info boxed each value.
	h.log.LogAttrs(context.Background(), slog.LevelInfo, "stk push accepted",
		slog.String("tracking_id", id), slog.String("client", client), slog.String("phone", events.MaskPhone(req.Phone)),
		slog.Int64("amount", req.Amount), slog.Int("reference_len", len(req.Reference)),
		slog.Uint64("stream_seq", ack.Sequence), slog.Bool("duplicate", ack.Duplicate),
		slog.String("mode", string(h.mode)), slog.Bool("idempotency_key", held != nil))
	return h.answerAccepted(c, wait, client, id, start)
}

// listenSync, in sync mode, subscribes to id's answers; nil in async mode
// or when it cannot. The caller closes it.
func (h *Handler) listenSync(client, id string) *syncWait {
	// In sync mode, listen before publishing, so that no answer can come
	// before the subscription.
	if h.mode != ModeSync {
		return nil
	}
	wait, err := h.listen(id)
	if err != nil {
		// The publish below fails too if NATS is gone; if not, the
		// client gets the async answer and polls.
		h.paymentLog(client, id).Warn("sync mode: cannot subscribe; answering as async", "error", err)
		return nil
	}
	return wait
}

// takeLimits takes the client's place in its cap of queued requests and the
// phone's prompt slot; queued gives the first back (takeQueued). On an error
// neither is held, and held's key is settled with it.
func (h *Handler) takeLimits(c echo.Context, client, id string, req Request, held *heldKey) (queued func(bool), err error) {
	// The client's place in its cap of queued requests and the phone's
	// slot are taken before the publish, so that no more than the limits
	// can be published, and given back if nothing was.
	queued, err = h.takeQueued(c.Request().Context(), client, id)
	if err == nil {
		if err = h.reservePrompt(c.Request().Context(), client, id, req.Phone); err != nil {
			queued(false)
		}
	}
	if err != nil {
		if held != nil {
			h.settleKey(c, client, id, held, err)
		}
		return nil, limitedAfterTakeOver(held, err)
	}
	return queued, nil
}

// limitedAfterTakeOver is the answer to a request refused by a limit, or
// unable to take it: for a key taken over from an api that died or was cut
// off mid-request, "not confirmed: retry with the same key" (the earlier
// api's publish may still be stored: a proposal in flight, a reconnect
// buffer), never a 429 or 503 saying nothing was sent, which could make
// the client ask again under a new key and prompt the customer twice.
func limitedAfterTakeOver(held *heldKey, err error) error {
	var limited *limitedError
	var unavailable *unavailableError
	if held == nil || !held.takenOver || !(errors.As(err, &limited) || errors.As(err, &unavailable)) {
		return err
	}
	// The refusal is kept as text, not wrapped: wrapped, the answer would
	// still be the limit's 429 (errorHandler looks for it first).
	return &unavailableError{message: MsgUnconfirmed, cause: fmt.Errorf("after a take-over: %v", err)}
}

// publishRequested publishes stk.requested of id, then settles what the
// publish's outcome decides: the queued place, held's key, the phone's
// slot. Its error is the client's answer (publishFailed).
func (h *Handler) publishRequested(c echo.Context, client, id string, req Request, held *heldKey, queued func(bool)) (*jetstream.PubAck, error) {
	ev := events.Requested{Payment: events.Payment{
		TrackingID:  id,
		Client:      client,
		Phone:       req.Phone,
		Amount:      req.Amount,
		Reference:   req.Reference,
		Tag:         req.Tag,
		RequestedAt: h.now().UTC(),
	}, CallbackURL: req.CallbackURL}
	// A client that hangs up does not stop the publish: once JetStream may
	// have the request, whether it is stored must be decided, not dropped.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), h.publishTimeout)
	ack, err := h.publish(pctx, ev)
	cancel()
	// Nothing was published under this id only if this publish certainly
	// stored nothing and, for a key taken over, no earlier holder's attempt
	// may have been stored either (its proposal may still be in flight, or
	// in a cut-off api's reconnect buffer).
	nothingSent := err != nil && publishNotStored(err) && (held == nil || !held.takenOver)
	queued(!nothingSent)
	if held != nil {
		h.settleKey(c, client, id, held, err)
	}
	if nothingSent {
		h.releasePrompt(c.Request().Context(), id)
	}
	if err != nil {
		return nil, publishFailed(h.paymentLog(client, id), id, req, held, err, nothingSent)
	}
	return ack, nil
}

// paymentLog is h.log with the tracking id and client of a payment, for
// its lines on the paths that fail.
func (h *Handler) paymentLog(client, id string) *slog.Logger {
	return h.log.With("tracking_id", id, "client", client)
}

// publishFailed is the answer to a failed publish of stk.requested;
// nothingSent: no attempt under this id can have been stored.
func publishFailed(log *slog.Logger, id string, req Request, held *heldKey, err error, nothingSent bool) error {
	msg, shownID := MsgUnavailable, ""
	if !nothingSent {
		// The request may have reached JetStream with its ack lost;
		// the Nats-Msg-Id keeps it from being stored twice, but it may
		// be stored once although the client is told 503. With an
		// Idempotency-Key the claim keeps the tracking id, and a retry
		// publishes the same one again.
		log.Error("publish stk.requested has an unknown outcome; it may still have been stored",
			"phone", events.MaskPhone(req.Phone), "amount", req.Amount, "idempotency_key", held != nil, "error", err)
		msg, shownID = MsgUnknownOutcome, id
		if held != nil {
			msg, shownID = MsgUnconfirmed, ""
		}
	}
	return &unavailableError{message: msg, cause: fmt.Errorf("publish stk.requested: %w", err), trackingID: shownID}
}

// answerAccepted answers an accepted request: in sync mode (wait) its
// record once Daraja answered it in time, else 202.
func (h *Handler) answerAccepted(c echo.Context, wait *syncWait, client, id string, start time.Time) error {
	if wait != nil {
		rec, ok := h.await(c.Request().Context(), wait, client, id, start.Add(h.syncTimeout))
		if ok {
			return c.JSON(http.StatusOK, recordBody{Success: true, Data: ViewOf(rec)})
		}
	}
	c.Response().Header().Set(echo.HeaderLocation, RecordPath+id)
	return c.JSON(http.StatusAccepted, acceptedBody{Success: true, TrackingID: id, Message: MsgAccepted})
}

// publish publishes ev and waits for its ack. An attempt that times out is
// repeated with the same Nats-Msg-Id while ctx allows: if the first one was
// stored after all, JetStream acks the second as a duplicate, and the client
// is told the truth, 202, instead of a 503 that would make it pay twice.
//
// A repeat's failure speaks for the repeat alone: once an attempt timed
// out, that attempt may be stored, so a repeat refused outright (no
// responders, a JetStream error) is returned as errMaybeStored, never as
// "not stored" (publishNotStored), which would release the key and tell the
// client to retry into a second payment.
func (h *Handler) publish(ctx context.Context, ev events.Event) (*jetstream.PubAck, error) {
	var lost error // the first attempt that timed out, if any
	for {
		actx, cancel := context.WithTimeout(ctx, h.publishTimeout/2)
		ack, err := h.pub.Publish(actx, ev)
		cancel()
		switch {
		case err == nil:
			return ack, nil
		case lost != nil && publishNotStored(err):
			return nil, &maybeStoredError{lost: lost, last: err}
		case ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded):
			return nil, err
		}
		if lost == nil {
			lost = err
		}
	}
}

// maybeStoredError is a publish whose repeat was refused after an earlier
// attempt's ack was lost: the earlier one may be stored.
type maybeStoredError struct{ lost, last error }

func (e *maybeStoredError) Error() string {
	return fmt.Sprintf("repeat refused (%v) after an attempt with an unknown outcome (%v)", e.last, e.lost)
}

// Unwrap gives the earlier attempt's error only: errors.Is and errors.As
// must not find the repeat's refusal and take it for the whole publish's.
func (e *maybeStoredError) Unwrap() error { return e.lost }
