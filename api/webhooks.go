package api

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events/kit/webhook"
)

// WebhookDeliveriesPath is GET /api/webhook-deliveries?tracking_id=…: the
// client's own webhook deliveries of a payment and their attempts
// (docs/WEBHOOKS.md).
const WebhookDeliveriesPath = "/api/webhook-deliveries"

// MsgWebhooksUnavailable is the 503 of a read Postgres did not answer.
const MsgWebhooksUnavailable = "The webhook deliveries cannot be read right now. Please retry."

const msgTrackingIDInvalid = "The tracking_id field must be a tracking id (a UUID)."

type deliveriesBody struct {
	Success bool           `json:"success"`
	Data    []deliveryView `json:"data"`
}

type deliveryView struct {
	ID          int64         `json:"id"`
	EventID     string        `json:"event_id"`
	EventType   string        `json:"event_type"`
	EndpointID  string        `json:"endpoint_id"`
	URL         string        `json:"url"`
	State       string        `json:"state"`
	Attempts    int           `json:"attempts"`
	CreatedAt   time.Time     `json:"created_at"`
	UpdatedAt   time.Time     `json:"updated_at"`
	NextAttempt *time.Time    `json:"next_attempt_at"`
	AttemptLog  []attemptView `json:"attempt_log"`
}

type attemptView struct {
	At         time.Time `json:"at"`
	StatusCode *int      `json:"status_code"`
	LatencyMS  int64     `json:"latency_ms"`
	Excerpt    string    `json:"response_excerpt"`
	Error      string    `json:"error"`
	Manual     bool      `json:"manual"`
}

func viewOfDelivery(d store.WebhookDelivery) deliveryView {
	v := deliveryView{
		ID: d.ID, EventID: d.EventID, EventType: d.EventType, EndpointID: d.EndpointID, URL: d.URL,
		State: d.State, Attempts: d.Attempts, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
		AttemptLog: make([]attemptView, 0, len(d.AttemptLog)),
	}
	if !d.NextAttempt.IsZero() {
		v.NextAttempt = &d.NextAttempt
	}
	for _, a := range d.AttemptLog {
		av := attemptView{At: a.At, LatencyMS: a.Latency.Milliseconds(), Excerpt: a.Excerpt, Error: webhook.PublicErrorText(a.Error), Manual: a.Manual}
		if a.StatusCode != 0 {
			av.StatusCode = &a.StatusCode
		}
		v.AttemptLog = append(v.AttemptLog, av)
	}
	return v
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

func slicesContainsField(errs FieldErrors, f string) bool {
	return slices.ContainsFunc(errs, func(e FieldError) bool { return e.Field == f })
}

// webhookDeliveries is GET /api/webhook-deliveries: the client's own; a
// tracking id of another client's, or unknown, has none.
func (h *Handler) webhookDeliveries(c echo.Context) error {
	vals, errs := splitParams(c.Request().URL.RawQuery, []string{"tracking_id"})
	id := ""
	if !slicesContainsField(errs, "tracking_id") {
		switch vs := vals["tracking_id"]; {
		case len(vs) == 0 || vs[0] == "":
			errs = append(errs, FieldError{Field: "tracking_id", Messages: []string{msgEmpty("tracking_id")}})
		case len(vs) > 1:
			errs = append(errs, FieldError{Field: "tracking_id", Messages: []string{msgTwice("tracking_id")}})
		default:
			if _, err := uuid.Parse(vs[0]); err != nil || len(vs[0]) != 36 {
				errs = append(errs, FieldError{Field: "tracking_id", Messages: []string{msgTrackingIDInvalid}})
			}
			id = vs[0]
		}
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b FieldError) int {
			return boolRank(b.Field == "tracking_id") - boolRank(a.Field == "tracking_id")
		})
		return &RequestError{Status: http.StatusBadRequest, Message: errs[0].Messages[0], Fields: errs}
	}
	setTrackingID(c, id)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), readTimeout)
	defer cancel()
	ds, err := h.store.WebhookDeliveries(ctx, clientOf(c), id)
	if err != nil {
		return &unavailableError{message: MsgWebhooksUnavailable, cause: err}
	}
	body := deliveriesBody{Success: true, Data: make([]deliveryView, 0, len(ds))}
	for _, d := range ds {
		body.Data = append(body.Data, viewOfDelivery(d))
	}
	return c.JSON(http.StatusOK, body)
}
