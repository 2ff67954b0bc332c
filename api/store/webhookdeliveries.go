package store

// Webhook deliveries and their attempts, as the webhooks worker records them.

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Delivery states.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
	DeliveryCancelled = "cancelled"
)

// WebhookDelivery is one event to one endpoint, and its attempts so far.
type WebhookDelivery struct {
	ID         int64
	EndpointID string
	// URL is the URL called: a request's callback_url, recorded with the
	// delivery, or else the endpoint's (when read back).
	URL         string
	Client      string
	TrackingID  string
	EventID     string
	EventType   string
	State       string
	Attempts    int
	CreatedAt   time.Time
	UpdatedAt   time.Time
	NextAttempt time.Time
	AttemptLog  []WebhookAttempt
}

// WebhookAttempt is one try of a delivery.
type WebhookAttempt struct {
	At         time.Time
	StatusCode int // 0: no answer
	Latency    time.Duration
	Excerpt    string
	Error      string
	Manual     bool
}

// EnsureWebhookDelivery records delivery d, or finds it when it is
// recorded already (the same event and endpoint), and returns its id.
func (s *Store) EnsureWebhookDelivery(ctx context.Context, d WebhookDelivery) (int64, error) {
	var id int64
	err := s.db.GetContext(ctx, &id, `
		WITH ins AS (
			INSERT INTO webhook_deliveries (endpoint_id, client, tracking_id, event_id, event_type, url)
			VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''))
			ON CONFLICT ON CONSTRAINT webhook_deliveries_event_endpoint_key DO NOTHING
			RETURNING id)
		SELECT id FROM ins
		UNION ALL
		SELECT id FROM webhook_deliveries WHERE event_id = $4 AND endpoint_id = $1
		LIMIT 1`, d.EndpointID, d.Client, d.TrackingID, d.EventID, d.EventType, d.URL)
	if err != nil {
		return 0, fmt.Errorf("record webhook delivery %s: %w", d.EventID, err)
	}
	return id, nil
}

// MaxAttemptError bounds a recorded attempt's error text.
const MaxAttemptError = 1024

// RecordWebhookAttempt adds attempt a to delivery id and sets its state
// (and, while pending, when the next try is due).
func (s *Store) RecordWebhookAttempt(ctx context.Context, id int64, a WebhookAttempt, state string, next time.Time) error {
	errText := a.Error
	if len(errText) > MaxAttemptError {
		errText = errText[:MaxAttemptError]
	}
	var status sql.NullInt32
	if a.StatusCode != 0 {
		status = sql.NullInt32{Int32: int32(a.StatusCode), Valid: true}
	}
	var nextAt sql.NullTime
	if !next.IsZero() {
		nextAt = sql.NullTime{Time: next, Valid: true}
	}
	return s.inTx(ctx, "record webhook attempt", func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, latency_ms, response_excerpt, error, manual)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			id, a.At, status, a.Latency.Milliseconds(), a.Excerpt, toValidText(errText), a.Manual); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `
			UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, updated_at = now(), next_attempt_at = $3
			WHERE id = $1`, id, state, nextAt)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrWebhookDeliveryNotFound
		}
		return nil
	})
}

// SetWebhookDeliveryState sets delivery id's state without an attempt (a
// delivery cancelled as its endpoint was disabled; one asked again).
func (s *Store) SetWebhookDeliveryState(ctx context.Context, id int64, state string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE webhook_deliveries SET state = $2, updated_at = now(), next_attempt_at = NULL WHERE id = $1`, id, state)
	if err != nil {
		return fmt.Errorf("set webhook delivery %d %s: %w", id, state, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrWebhookDeliveryNotFound
	}
	return nil
}

type deliveryRow struct {
	ID          int64        `db:"id"`
	EndpointID  string       `db:"endpoint_id"`
	URL         string       `db:"url"`
	Client      string       `db:"client"`
	TrackingID  string       `db:"tracking_id"`
	EventID     string       `db:"event_id"`
	EventType   string       `db:"event_type"`
	State       string       `db:"state"`
	Attempts    int          `db:"attempts"`
	CreatedAt   time.Time    `db:"created_at"`
	UpdatedAt   time.Time    `db:"updated_at"`
	NextAttempt sql.NullTime `db:"next_attempt_at"`
}

type attemptRow struct {
	DeliveryID int64         `db:"delivery_id"`
	At         time.Time     `db:"attempted_at"`
	StatusCode sql.NullInt32 `db:"status_code"`
	LatencyMS  int64         `db:"latency_ms"`
	Excerpt    string        `db:"response_excerpt"`
	Error      string        `db:"error"`
	Manual     bool          `db:"manual"`
}

// MaxAttemptsShown bounds the attempts read back per delivery: the latest.
const MaxAttemptsShown = 50

// WebhookDeliveries is client's deliveries of trackingID's events, oldest
// first, each with its latest attempts (MaxAttemptsShown) oldest first.
func (s *Store) WebhookDeliveries(ctx context.Context, client, trackingID string) ([]WebhookDelivery, error) {
	return s.deliveries(ctx, `d.client = $1 AND d.tracking_id = $2`, client, trackingID)
}

// WebhookDeliveryByID is delivery id, whoever's it is (stkgate-admin).
func (s *Store) WebhookDeliveryByID(ctx context.Context, id int64) (WebhookDelivery, error) {
	ds, err := s.deliveries(ctx, `d.id = $1`, id)
	if err != nil {
		return WebhookDelivery{}, err
	}
	if len(ds) == 0 {
		return WebhookDelivery{}, ErrWebhookDeliveryNotFound
	}
	return ds[0], nil
}

func (s *Store) deliveries(ctx context.Context, where string, args ...any) ([]WebhookDelivery, error) {
	var rows []deliveryRow
	if err := s.db.SelectContext(ctx, &rows, `
		SELECT d.id, d.endpoint_id, coalesce(d.url, e.url) AS url, d.client, d.tracking_id, d.event_id, d.event_type, d.state,
			d.attempts, d.created_at, d.updated_at, d.next_attempt_at
		FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
		WHERE `+where+` ORDER BY d.id LIMIT 100`, args...); err != nil {
		return nil, fmt.Errorf("list webhook deliveries: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	ids := make([]int64, len(rows))
	byID := make(map[int64]int, len(rows))
	out := make([]WebhookDelivery, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
		byID[r.ID] = i
		out[i] = WebhookDelivery{
			ID: r.ID, EndpointID: r.EndpointID, URL: r.URL, Client: r.Client, TrackingID: r.TrackingID,
			EventID: r.EventID, EventType: r.EventType, State: r.State, Attempts: r.Attempts,
			CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), NextAttempt: timeOf(r.NextAttempt),
		}
	}
	var atts []attemptRow
	if err := s.db.SelectContext(ctx, &atts, `
		SELECT delivery_id, attempted_at, status_code, latency_ms, response_excerpt, error, manual FROM (
			SELECT a.*, row_number() OVER (PARTITION BY delivery_id ORDER BY id DESC) AS n
			FROM webhook_attempts a WHERE delivery_id = ANY($1)) x
		WHERE n <= $2 ORDER BY delivery_id, id`, pq.Array(ids), MaxAttemptsShown); err != nil {
		return nil, fmt.Errorf("list webhook attempts: %w", err)
	}
	for _, a := range atts {
		i := byID[a.DeliveryID]
		out[i].AttemptLog = append(out[i].AttemptLog, WebhookAttempt{
			At: a.At.UTC(), StatusCode: int(a.StatusCode.Int32), Latency: time.Duration(a.LatencyMS) * time.Millisecond,
			Excerpt: a.Excerpt, Error: a.Error, Manual: a.Manual,
		})
	}
	return out, nil
}

// toValidText makes s storable as Postgres text: valid UTF-8, no NUL.
func toValidText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
