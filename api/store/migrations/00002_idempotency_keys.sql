-- Idempotency-Key of POST /api/stk-push: which tracking id a client's key
-- stands for, so that a retried request is answered with the first one's id
-- instead of prompting the customer twice. Written and read by the api only.

-- +goose Up
CREATE TABLE idempotency_keys (
    client       text        NOT NULL,
    key          text        NOT NULL,
    -- sha256 (hex) of the validated, normalised request: phone, amount,
    -- reference, tag. The same key with another hash is refused.
    request_hash text        NOT NULL,
    -- Chosen when the key is first claimed, before stk.requested is
    -- published, so that every retry publishes the same id (and the same
    -- Nats-Msg-Id, which JetStream drops as a duplicate).
    tracking_id  uuid        NOT NULL,
    -- pending: claimed, stk.requested not known to be stored yet;
    -- done: stk.requested is in the stream.
    state        text        NOT NULL,
    -- Who holds a pending claim (a random id per claim or take-over), so
    -- that an api whose lease ran out cannot release or finish the claim
    -- another api took over.
    holder       uuid        NOT NULL,
    -- A pending claim is being worked on until then; past it (the api
    -- crashed, or the publish outcome was unknown) another request with
    -- the same key and body takes it over and publishes the same id again.
    lease_until  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    -- Past it the key is forgotten: purged, or replaced by a new claim.
    expires_at   timestamptz NOT NULL,

    PRIMARY KEY (client, key),
    CONSTRAINT idempotency_keys_key_check CHECK (length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_state_check CHECK (state IN ('pending', 'done'))
);

-- The purge deletes expired keys, oldest first.
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- +goose Down
DROP TABLE idempotency_keys;
