package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

// The read model lags the stream by the projector's delay, and by much
// more while the projector or Postgres is down. A tracking id the api has
// answered 202 for must never be 404 meanwhile, so a record the read model
// does not have is looked up in the STK stream, the source of truth.

// stkStream returns the STK stream's handle, looked up once: its direct
// gets need no stream info after that.
func (h *Handler) stkStream(ctx context.Context) (jetstream.Stream, error) {
	h.streamMu.Lock()
	defer h.streamMu.Unlock()
	if h.streamHandle != nil {
		return h.streamHandle, nil
	}
	s, err := h.js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	h.streamHandle = s
	return s, nil
}

// recordFromStream builds client's record of id from its events in the
// stream, as the projector would write it: stage, Daraja's ids and the
// first outcome. It is store.ErrNotFound when the stream has no
// stk.requested of id, or it is another client's. The record has ID 0: the
// read model's serial is not assigned yet.
//
// Its steps: requestedRecord, then setDispatched, setCompleted and the late
// result of the later events.
func (h *Handler) recordFromStream(ctx context.Context, client, id string) (store.Record, error) {
	uid, err := uuid.Parse(id)
	if err != nil || client == "" {
		return store.Record{}, store.ErrNotFound
	}
	id = uid.String()
	s, err := h.stkStream(ctx)
	if err != nil {
		return store.Record{}, err
	}
	rec, err := h.requestedRecord(ctx, s, client, id)
	if err != nil {
		return store.Record{}, err
	}

	// The first of each later event, as the projector applies the first
	// outcome and ignores later ones (a late result is the exception:
	// see below). A replica that lags may not have them yet: the record is
	// then one step behind (Pending a moment longer), never wrong.
	later := func(typ string) (events.Event, time.Time, error) {
		return h.streamEvent(client, id, typ, func(subject string) (*jetstream.RawStreamMsg, error) {
			return s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
		})
	}
	last := func(typ string) (events.Event, time.Time, error) {
		return h.streamEvent(client, id, typ, func(subject string) (*jetstream.RawStreamMsg, error) {
			return s.GetLastMsgForSubject(ctx, subject)
		})
	}
	ev, at, err := later(events.TypeDispatched)
	if err != nil {
		return store.Record{}, err
	}
	if d, ok := ev.(events.Dispatched); ok {
		setDispatched(&rec, d, at)
	}
	ev, at, err = later(events.TypeCompleted)
	if err != nil {
		return store.Record{}, err
	}
	if c, ok := ev.(events.Completed); ok {
		setCompleted(&rec, c, at)
	}
	// Only an outcome stkgate decided itself can be followed by Daraja's
	// late word (events.DecidedByStkgate); the look-up is spared otherwise.
	if !events.DecidedByStkgate(rec.ResponseCode) {
		return rec, nil
	}
	ev, at, err = lateResult(later, last)
	if err != nil {
		return store.Record{}, err
	}
	if l, ok := ev.(events.LateResult); ok {
		rec.LateResult = store.LateResultOf(l)
		rec.UpdatedAt = laterOf(rec.UpdatedAt, at)
	}
	return rec, nil
}

// requestedRecord is client's record of id as its stk.requested in s makes
// it: Pending, at store.StageRequested. store.ErrNotFound as for
// recordFromStream.
func (h *Handler) requestedRecord(ctx context.Context, s jetstream.Stream, client, id string) (store.Record, error) {
	// A replica's "not found" is confirmed with the leader: a 404 for an
	// id answered 202 a moment ago would tell the client it does not exist.
	msg, err := events.LastMsg(ctx, h.js, s, events.Subject(events.TypeRequested, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return store.Record{}, store.ErrNotFound
	}
	if err != nil {
		return store.Record{}, fmt.Errorf("look up stk.requested: %w", err)
	}
	_, ev, err := events.Decode(msg.Data)
	if err != nil {
		h.log.Warn("stk.requested in the stream cannot be decoded", "tracking_id", id, "error", err)
		return store.Record{}, store.ErrNotFound
	}
	p := ev.Base()
	if p.Client != client || p.TrackingID != id {
		// Another client's id costs what an unknown one does, whose "not
		// found" the leader confirmed (events.LastMsg): a 404 answered a
		// round trip sooner would tell that the id exists.
		_, _ = events.LastMsgFromLeader(ctx, h.js, s.CachedInfo().Config.Name, events.Subject(events.TypeRequested, id))
		return store.Record{}, store.ErrNotFound
	}
	rec := store.Record{
		TrackingID:  id,
		Client:      p.Client,
		PhoneNumber: p.Phone,
		Amount:      p.Amount,
		Reference:   p.Reference,
		Tag:         p.Tag,
		Status:      events.StatusPending,
		StatusLabel: events.LabelPending,
		Stage:       store.StageRequested,
		CreatedAt:   p.RequestedAt.UTC(),
		UpdatedAt:   msg.Time.UTC(),
	}
	if p.RequestedAt.IsZero() {
		rec.CreatedAt = msg.Time.UTC()
	}
	return rec, nil
}

// setDispatched applies the first stk.dispatched (stored at at) to rec.
func setDispatched(rec *store.Record, d events.Dispatched, at time.Time) {
	rec.Stage = store.StageDispatched
	rec.MerchantRequestID, rec.CheckoutRequestID = d.MerchantRequestID, d.CheckoutRequestID
	rec.UpdatedAt = laterOf(rec.UpdatedAt, at)
}

// setCompleted applies the first stk.completed (stored at at) to rec.
func setCompleted(rec *store.Record, c events.Completed, at time.Time) {
	rec.Stage = store.StageCompleted
	rec.Status, rec.StatusLabel = events.Outcome(c.ResultCode)
	rec.ResponseCode = c.ResultCode
	rec.ResponseDescription = c.ResultDesc
	rec.TransactionCode = c.Receipt
	rec.TransactionDate = c.TransactionDate
	rec.Source = c.Source
	if c.MerchantRequestID != "" {
		rec.MerchantRequestID = c.MerchantRequestID
	}
	if c.CheckoutRequestID != "" {
		rec.CheckoutRequestID = c.CheckoutRequestID
	}
	rec.UpdatedAt = laterOf(rec.UpdatedAt, at)
}

// streamEvent is the event of type typ of payment id that get finds, as
// the projector will write it; nil when there is none, or it cannot be
// used (undecodable, another client's: logged).
func (h *Handler) streamEvent(client, id, typ string, get func(subject string) (*jetstream.RawStreamMsg, error)) (events.Event, time.Time, error) {
	m, err := get(events.Subject(typ, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("look up %s: %w", typ, err)
	}
	_, ev, err := events.Decode(m.Data)
	if err != nil || ev.Base().Client != client {
		h.log.Warn("event in the stream cannot be used", "tracking_id", id, "type", typ, "error", err)
		return nil, time.Time{}, nil
	}
	// As the projector will write it: a completion without a result
	// code is an invalid outcome, not nothing.
	ev, _ = store.Normalize(ev)
	return ev, m.Time.UTC(), nil
}

// lateResult is the late result the projector keeps (events.LateReplaces):
// the first, unless a success came after a failure; then the last, which
// is that success (a success is never replaced).
func lateResult(first, last func(string) (events.Event, time.Time, error)) (events.Event, time.Time, error) {
	ev, at, err := first(events.TypeLateResult)
	l, ok := ev.(events.LateResult)
	if err != nil || !ok || l.ResultCode == "0" {
		return ev, at, err
	}
	lev, lat, err := last(events.TypeLateResult)
	if err != nil {
		return nil, time.Time{}, err
	}
	if ll, ok := lev.(events.LateResult); ok && events.LateReplaces(l.ResultCode, ll.ResultCode) {
		return lev, lat, nil
	}
	return ev, at, nil
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// currentRecord is client's record of id: the read model's, else the
// stream's. Errors other than store.ErrNotFound are *unavailableError.
func (h *Handler) currentRecord(ctx context.Context, client, id string) (store.Record, error) {
	rec, err := h.store.Get(ctx, client, id)
	if errors.Is(err, store.ErrNotFound) {
		rec, err = h.recordFromStream(ctx, client, id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			// The id may well be accepted and only not projected yet: a
			// 404 would tell the client it does not exist.
			return rec, &unavailableError{message: MsgReadUnavailable, cause: err}
		}
		return rec, err
	}
	if err != nil {
		return rec, &unavailableError{message: MsgReadUnavailable, cause: err}
	}
	return rec, nil
}
