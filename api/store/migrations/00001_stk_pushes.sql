-- The read model of STK pushes: one row per tracking id, written only by the
-- projector from the STK stream, read by the api for polling.

-- +goose Up
CREATE TABLE stk_pushes (
    id                   bigserial   PRIMARY KEY,
    tracking_id          uuid        NOT NULL,
    client               text        NOT NULL,
    phone_number         text        NOT NULL,
    amount               bigint      NOT NULL,
    reference            text        NOT NULL,
    tag                  text,
    -- 0 while waiting, 1 once final (events.Outcome of response_code).
    status               smallint    NOT NULL DEFAULT 0,
    -- NULL while pending; Daraja's ResultCode or its errorCode once final.
    response_code        text,
    response_description text,
    -- M-Pesa receipt, only on success.
    transaction_code     text,
    merchant_request_id  text,
    checkout_request_id  text,
    -- Daraja's TransactionDate, East Africa Time, "YYYY-MM-DD HH:MM:SS".
    transaction_date     text,
    -- State order of the events applied: 0 requested, 1 dispatched, 2 completed.
    stage                smallint    NOT NULL DEFAULT 0,
    -- Who decided the outcome (callback, dispatcher, query); NULL while pending.
    source               text,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,

    CONSTRAINT stk_pushes_tracking_id_key UNIQUE (tracking_id),
    CONSTRAINT stk_pushes_stage_check CHECK (stage IN (0, 1, 2)),
    CONSTRAINT stk_pushes_status_check CHECK (status IN (0, 1)),
    -- A record is final exactly when a completion was applied, and then it
    -- has a response code: a poller that waits for status 1 always gets one.
    CONSTRAINT stk_pushes_final_check CHECK ((stage = 2) = (status = 1)),
    CONSTRAINT stk_pushes_response_code_check CHECK ((status = 1) = (response_code IS NOT NULL))
);

-- A client's records, newest first (listing, per-client reporting). Lookups
-- by tracking id go through the unique index above.
CREATE INDEX stk_pushes_client_created_idx ON stk_pushes (client, created_at DESC, id DESC);

-- Daraja knows a push by its CheckoutRequestID: the reconciler and callback
-- matching look it up, and two payments must never share one.
CREATE UNIQUE INDEX stk_pushes_checkout_request_id_key ON stk_pushes (checkout_request_id)
    WHERE checkout_request_id IS NOT NULL;

-- Pushes still waiting for an outcome, oldest first: what a reconciler sweeps.
CREATE INDEX stk_pushes_pending_idx ON stk_pushes (created_at) WHERE status = 0;

-- +goose Down
DROP TABLE stk_pushes;
