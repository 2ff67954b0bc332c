-- Signed webhooks (docs/WEBHOOKS.md): each client's endpoints, managed with
-- stkgate-admin webhook; one delivery per (event, endpoint), written by the
-- webhooks worker; and every attempt of a delivery, read by the api
-- (GET /api/webhook-deliveries) and stkgate-admin.

-- +goose Up
CREATE TABLE webhook_endpoints (
    -- Made by stkgate-admin; the additional data of the sealed secrets, so
    -- a secret copied onto another endpoint does not open.
    id                  uuid        PRIMARY KEY,
    -- The client's name (api_clients, or an API_TOKENS client).
    client              text        NOT NULL,
    -- Checked at registration (https, no private address) and again at
    -- every connection by the worker.
    url                 text        NOT NULL,
    -- Event types delivered: stk.completed by default.
    events              text[]      NOT NULL,
    -- The signing secret, sealed (AES-256-GCM, WEBHOOK_SECRET_KEY): the
    -- worker must sign with it, so it cannot be a one-way digest.
    secret              bytea       NOT NULL,
    -- After a rotation, the secret before it signs too until
    -- previous_expires_at.
    previous_secret     bytea,
    previous_expires_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Set: nothing is delivered (the receiver answered 410 Gone, or an
    -- operator disabled it); disabled_reason says which.
    disabled_at         timestamptz,
    disabled_reason     text,
    -- Set: removed; kept for its deliveries' history.
    removed_at          timestamptz,

    CONSTRAINT webhook_endpoints_client_check CHECK (client ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    CONSTRAINT webhook_endpoints_url_check CHECK (length(url) BETWEEN 1 AND 2048),
    CONSTRAINT webhook_endpoints_events_check CHECK (
        cardinality(events) >= 1
        AND events <@ ARRAY['stk.requested', 'stk.dispatched', 'stk.completed', 'stk.late_result']::text[]),
    CONSTRAINT webhook_endpoints_previous_check CHECK ((previous_secret IS NULL) = (previous_expires_at IS NULL))
);

CREATE INDEX webhook_endpoints_client_idx ON webhook_endpoints (client) WHERE removed_at IS NULL;

CREATE TABLE webhook_deliveries (
    id              bigserial   PRIMARY KEY,
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (id),
    client          text        NOT NULL,
    tracking_id     text        NOT NULL,
    -- The CloudEvents id of the event delivered (also its webhook-id).
    event_id        text        NOT NULL,
    event_type      text        NOT NULL,
    -- pending: being tried; delivered: a 2xx came; failed: every retry
    -- spent; cancelled: the endpoint was disabled or removed.
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- When the next try is due while pending.
    next_attempt_at timestamptz,

    CONSTRAINT webhook_deliveries_event_endpoint_key UNIQUE (event_id, endpoint_id),
    CONSTRAINT webhook_deliveries_state_check CHECK (state IN ('pending', 'delivered', 'failed', 'cancelled'))
);

CREATE INDEX webhook_deliveries_client_tracking_idx ON webhook_deliveries (client, tracking_id);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);

CREATE TABLE webhook_attempts (
    id               bigserial   PRIMARY KEY,
    delivery_id      bigint      NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at     timestamptz NOT NULL,
    -- The answer's HTTP status; NULL when none came (error says why).
    status_code      integer,
    latency_ms       integer     NOT NULL,
    -- The start of the answer's body (4 KiB at most).
    response_excerpt text        NOT NULL DEFAULT '',
    error            text        NOT NULL DEFAULT '',
    -- Asked for by an operator (stkgate-admin webhook redeliver).
    manual           boolean     NOT NULL DEFAULT false,

    CONSTRAINT webhook_attempts_excerpt_check CHECK (octet_length(response_excerpt) <= 16384),
    CONSTRAINT webhook_attempts_error_check CHECK (length(error) <= 1024)
);

CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- +goose Down
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoints;
