-- Prompts per phone: one row per request accepted for a phone, so that a
-- phone is not prompted more than PHONE_MAX_PROMPTS times per PHONE_WINDOW
-- across every client and every api instance. Written and read by the api
-- only; rows older than the window are purged.
--
-- The phone is kept as it is (254XXXXXXXXX), not hashed: stk_pushes holds
-- it as it is already, for longer, and an unkeyed hash of a nine-digit
-- number is reversed by trying them all.

-- +goose Up
CREATE TABLE phone_prompts (
    -- The request's tracking id: a retry that publishes the same request
    -- again (an Idempotency-Key taken over) is not counted twice.
    tracking_id uuid        PRIMARY KEY,
    phone       text        NOT NULL,
    created_at  timestamptz NOT NULL
);

-- A phone's prompts, newest first: what a reservation counts.
CREATE INDEX phone_prompts_phone_created_idx ON phone_prompts (phone, created_at DESC);

-- The purge deletes rows older than the window, oldest first.
CREATE INDEX phone_prompts_created_idx ON phone_prompts (created_at);

-- +goose Down
DROP TABLE phone_prompts;
