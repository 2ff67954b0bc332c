package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Webhook endpoints, deliveries and attempts (migration 9, docs/WEBHOOKS.md):
// endpoints are written by stkgate-admin, deliveries and attempts by the
// webhooks worker, and both read by the api and stkgate-admin. Secrets are
// stored sealed (events/kit/webhook.Sealer); the store never sees them in
// clear.

// MaxWebhookEndpoints bounds a client's endpoints: each event is delivered
// to each of them.
const MaxWebhookEndpoints = 10

// Errors of the webhook functions.
var (
	ErrWebhookEndpointNotFound = errors.New("webhook endpoint not found")
	ErrTooManyWebhookEndpoints = fmt.Errorf("a client has at most %d webhook endpoints", MaxWebhookEndpoints)
	ErrWebhookDeliveryNotFound = errors.New("webhook delivery not found")
)

// Endpoint kinds: one registered with webhook add, or the one that holds
// a client's per-request callback URLs (migration 10): its URL is a label,
// each of its deliveries carries the URL it calls.
const (
	KindEndpoint    = "endpoint"
	KindCallbackURL = "callback_url"
	// CallbackURLLabel is a callback_url endpoint's URL column.
	CallbackURLLabel = "(callback_url of each request)"
)

// WebhookEndpoint is one of a client's endpoints.
type WebhookEndpoint struct {
	ID     string
	Client string
	Kind   string // KindEndpoint or KindCallbackURL
	URL    string
	Events []string
	// Secret is the signing secret, sealed; PreviousSecret the one before
	// the last rotation, signing too until PreviousExpiresAt.
	Secret            []byte
	PreviousSecret    []byte
	PreviousExpiresAt time.Time
	CreatedAt         time.Time
	DisabledAt        time.Time
	DisabledReason    string
}

// Signing is the sealed secrets to sign with at now: the current one, and
// the previous one while its grace lasts.
func (e WebhookEndpoint) Signing(now time.Time) [][]byte {
	out := [][]byte{e.Secret}
	if e.PreviousSecret != nil && now.Before(e.PreviousExpiresAt) {
		out = append(out, e.PreviousSecret)
	}
	return out
}

type endpointRow struct {
	ID                string         `db:"id"`
	Client            string         `db:"client"`
	Kind              string         `db:"kind"`
	URL               string         `db:"url"`
	Events            pq.StringArray `db:"events"`
	Secret            []byte         `db:"secret"`
	PreviousSecret    []byte         `db:"previous_secret"`
	PreviousExpiresAt sql.NullTime   `db:"previous_expires_at"`
	CreatedAt         time.Time      `db:"created_at"`
	DisabledAt        sql.NullTime   `db:"disabled_at"`
	DisabledReason    sql.NullString `db:"disabled_reason"`
}

func (r endpointRow) endpoint() WebhookEndpoint {
	return WebhookEndpoint{
		ID: r.ID, Client: r.Client, Kind: r.Kind, URL: r.URL, Events: []string(r.Events),
		Secret: r.Secret, PreviousSecret: r.PreviousSecret, PreviousExpiresAt: timeOf(r.PreviousExpiresAt),
		CreatedAt: r.CreatedAt.UTC(), DisabledAt: timeOf(r.DisabledAt), DisabledReason: r.DisabledReason.String,
	}
}

const endpointColumns = `id, client, kind, url, events, secret, previous_secret, previous_expires_at, created_at, disabled_at, disabled_reason`

// AddWebhookEndpoint adds e (its ID made by the caller, its URL checked and
// its secret sealed). ErrTooManyWebhookEndpoints past MaxWebhookEndpoints.
func (s *Store) AddWebhookEndpoint(ctx context.Context, e WebhookEndpoint) error {
	return s.inTx(ctx, "add webhook endpoint", func(tx *sqlx.Tx) error {
		// Two adds for one client take turns, so the bound holds.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('webhook_endpoints:' || $1))`, e.Client); err != nil {
			return err
		}
		var n int
		if err := tx.GetContext(ctx, &n, `SELECT count(*) FROM webhook_endpoints WHERE client = $1 AND removed_at IS NULL AND kind = 'endpoint'`, e.Client); err != nil {
			return err
		}
		if n >= MaxWebhookEndpoints {
			return ErrTooManyWebhookEndpoints
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO webhook_endpoints (id, client, url, events, secret) VALUES ($1, $2, $3, $4, $5)`,
			e.ID, e.Client, e.URL, pq.Array(e.Events), e.Secret)
		return err
	})
}

// WebhookEndpoints lists the endpoints not removed of client, or of every
// client when client is "", by client and creation.
func (s *Store) WebhookEndpoints(ctx context.Context, client string) ([]WebhookEndpoint, error) {
	return s.selectEndpoints(ctx, "list webhook endpoints", `
		SELECT `+endpointColumns+` FROM webhook_endpoints
		WHERE removed_at IS NULL AND ($1 = '' OR client = $1)
		ORDER BY client, created_at, id`, client)
}

// WebhookEndpointsFor is the endpoints of client that take events of typ
// now: not removed, not disabled; its callback_url endpoint among them
// (Kind tells it apart).
func (s *Store) WebhookEndpointsFor(ctx context.Context, client, typ string) ([]WebhookEndpoint, error) {
	return s.selectEndpoints(ctx, "webhook endpoints for "+typ, `
		SELECT `+endpointColumns+` FROM webhook_endpoints
		WHERE client = $1 AND removed_at IS NULL AND disabled_at IS NULL AND $2 = ANY(events)
		ORDER BY created_at, id`, client, typ)
}

func (s *Store) selectEndpoints(ctx context.Context, what, query string, args ...any) ([]WebhookEndpoint, error) {
	var rows []endpointRow
	if err := s.db.SelectContext(ctx, &rows, query, args...); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	out := make([]WebhookEndpoint, len(rows))
	for i, r := range rows {
		out[i] = r.endpoint()
	}
	return out, nil
}

// WebhookEndpoint is the endpoint id, removed or not (a delivery to a
// removed endpoint is cancelled by the worker, which needs to know).
// ErrWebhookEndpointNotFound when there is none; Removed reports removal.
func (s *Store) WebhookEndpoint(ctx context.Context, id string) (WebhookEndpoint, error) {
	var r struct {
		endpointRow
		RemovedAt sql.NullTime `db:"removed_at"`
	}
	err := s.db.GetContext(ctx, &r, `SELECT `+endpointColumns+`, removed_at FROM webhook_endpoints WHERE id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) || isInvalidUUID(err) {
		return WebhookEndpoint{}, ErrWebhookEndpointNotFound
	}
	if err != nil {
		return WebhookEndpoint{}, fmt.Errorf("webhook endpoint %s: %w", id, err)
	}
	e := r.endpoint()
	if r.RemovedAt.Valid {
		e.DisabledAt = r.RemovedAt.Time.UTC()
		e.DisabledReason = "removed"
	}
	return e, nil
}

// AllWebhookEndpoints is every endpoint, removed ones too (their secrets
// are stored all the same): for webhook reseal.
func (s *Store) AllWebhookEndpoints(ctx context.Context) ([]WebhookEndpoint, error) {
	return s.selectEndpoints(ctx, "all webhook endpoints", `SELECT `+endpointColumns+` FROM webhook_endpoints ORDER BY created_at, id`)
}

// ResealWebhookSecrets replaces endpoint e's sealed secrets (the current
// and the previous one) with secret and previous, the same secrets sealed
// anew, unless they changed since e was read (a rotation meanwhile):
// then ErrWebhookEndpointNotFound, and nothing is written.
func (s *Store) ResealWebhookSecrets(ctx context.Context, e WebhookEndpoint, secret, previous []byte) error {
	return s.updateEndpoint(ctx, "reseal webhook secrets", `
		UPDATE webhook_endpoints SET secret = $4, previous_secret = $5
		WHERE id = $1 AND secret = $2 AND previous_secret IS NOT DISTINCT FROM $3`,
		e.ID, e.Secret, e.PreviousSecret, secret, previous)
}

// isInvalidUUID: an id that is not a UUID names no endpoint.
func isInvalidUUID(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "22P02"
}

// updateEndpoint runs an UPDATE of one endpoint not removed;
// ErrWebhookEndpointNotFound when none matched.
func (s *Store) updateEndpoint(ctx context.Context, what, query string, args ...any) error {
	res, err := s.db.ExecContext(ctx, query, args...)
	if isInvalidUUID(err) {
		return ErrWebhookEndpointNotFound
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	} else if n == 0 {
		return ErrWebhookEndpointNotFound
	}
	return nil
}

// RemoveWebhookEndpoint removes the endpoint id: nothing more is delivered
// to it; its deliveries' history stays.
func (s *Store) RemoveWebhookEndpoint(ctx context.Context, id string) error {
	return s.updateEndpoint(ctx, "remove webhook endpoint",
		`UPDATE webhook_endpoints SET removed_at = now() WHERE id = $1 AND removed_at IS NULL`, id)
}

// RotateWebhookSecret gives the endpoint id a new sealed secret; the one
// it replaces keeps signing for grace (0: stops at once).
func (s *Store) RotateWebhookSecret(ctx context.Context, id string, sealed []byte, grace time.Duration) error {
	if grace < 0 {
		return errors.New("rotate webhook secret: negative grace")
	}
	return s.updateEndpoint(ctx, "rotate webhook secret", `
		UPDATE webhook_endpoints
		SET previous_secret = secret, previous_expires_at = now() + $3 * interval '1 microsecond', secret = $2
		WHERE id = $1 AND removed_at IS NULL`, id, sealed, grace.Microseconds())
}

// DisableWebhookEndpoint stops deliveries to the endpoint id, saying why
// (the receiver answered 410 Gone; an operator).
func (s *Store) DisableWebhookEndpoint(ctx context.Context, id, reason string) error {
	return s.updateEndpoint(ctx, "disable webhook endpoint", `
		UPDATE webhook_endpoints SET disabled_at = coalesce(disabled_at, now()), disabled_reason = $2
		WHERE id = $1 AND removed_at IS NULL`, id, reason)
}

// EnableWebhookEndpoint delivers to a disabled endpoint again.
func (s *Store) EnableWebhookEndpoint(ctx context.Context, id string) error {
	return s.updateEndpoint(ctx, "enable webhook endpoint", `
		UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL
		WHERE id = $1 AND removed_at IS NULL`, id)
}

// SetCallbackURLAllowed lets the client name give a callback_url with its
// requests, or no longer. Its first opt-in adds ep (its ID made and its
// secret sealed by the caller) as its callback_url endpoint: created is
// true then, and the caller shows the secret; later opt-ins keep the
// endpoint and its secret (webhook rotate-secret changes it). It returns
// the callback_url endpoint, if any. ErrClientNotFound for a name not in
// api_clients (an API_TOKENS client cannot opt in).
func (s *Store) SetCallbackURLAllowed(ctx context.Context, name string, on bool, ep WebhookEndpoint) (_ WebhookEndpoint, created bool, err error) {
	var out WebhookEndpoint
	err = s.inTx(ctx, "allow callback_url for "+name, func(tx *sqlx.Tx) error {
		id, err := lockClient(ctx, tx, name)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE api_clients SET callback_url_allowed = $2 WHERE id = $1`, id, on); err != nil {
			return err
		}
		var r endpointRow
		err = tx.GetContext(ctx, &r, `SELECT `+endpointColumns+` FROM webhook_endpoints
			WHERE client = $1 AND kind = 'callback_url' AND removed_at IS NULL`, name)
		switch {
		case err == nil:
			out = r.endpoint()
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return err
		case !on:
			return nil
		}
		// Its events are stk.completed: a payment's final outcome.
		_, err = tx.ExecContext(ctx, `INSERT INTO webhook_endpoints (id, client, kind, url, events, secret)
			VALUES ($1, $2, 'callback_url', $3, ARRAY['stk.completed'], $4)`, ep.ID, name, CallbackURLLabel, ep.Secret)
		if err != nil {
			return err
		}
		ep.Client, ep.Kind, ep.URL, ep.Events, created = name, KindCallbackURL, CallbackURLLabel, []string{"stk.completed"}, true
		out = ep
		return nil
	})
	if err != nil {
		return WebhookEndpoint{}, false, err
	}
	return out, created, nil
}

// CallbackURLAllowed reports whether the client name opted in to a
// callback_url per request; false for a name not in api_clients.
func (s *Store) CallbackURLAllowed(ctx context.Context, name string) (bool, error) {
	var on bool
	err := s.db.GetContext(ctx, &on, `SELECT callback_url_allowed FROM api_clients WHERE name = $1`, name)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("callback_url allowed for %s: %w", name, err)
	}
	return on, nil
}
