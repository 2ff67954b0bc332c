-- A callback URL per request (POST /api/stk-push's callback_url,
-- docs/WEBHOOKS.md#a-callback-url-per-request): a client opts in with
-- stkgate-admin client allow-callback-url; its first opt-in makes one
-- webhook endpoint of kind callback_url, which holds the client's signing
-- secret for those URLs and whose deliveries each carry their own URL.

-- +goose Up
-- API_TOKENS clients have no row here, so they cannot opt in.
ALTER TABLE api_clients ADD COLUMN callback_url_allowed boolean NOT NULL DEFAULT false;

-- endpoint: registered with webhook add; callback_url: the client's
-- per-request URLs (its url column is a label, never called).
ALTER TABLE webhook_endpoints ADD COLUMN kind text NOT NULL DEFAULT 'endpoint',
    ADD CONSTRAINT webhook_endpoints_kind_check CHECK (kind IN ('endpoint', 'callback_url'));
CREATE UNIQUE INDEX webhook_endpoints_callback_url_key ON webhook_endpoints (client)
    WHERE kind = 'callback_url' AND removed_at IS NULL;

-- The URL called, when it is not the endpoint's (a request's callback_url).
ALTER TABLE webhook_deliveries ADD COLUMN url text,
    ADD CONSTRAINT webhook_deliveries_url_check CHECK (url IS NULL OR length(url) BETWEEN 1 AND 2048);

-- +goose Down
ALTER TABLE webhook_deliveries DROP COLUMN url;
DROP INDEX webhook_endpoints_callback_url_key;
ALTER TABLE webhook_endpoints DROP COLUMN kind;
ALTER TABLE api_clients DROP COLUMN callback_url_allowed;
