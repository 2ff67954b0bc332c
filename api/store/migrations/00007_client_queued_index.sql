-- A client's requests accepted and not yet dispatched (stage 0): what the
-- api counts, on every api instance, to cap each client's requests waiting
-- in the dispatcher's queue (API_CLIENT_MAX_QUEUED). Partial, so its size is
-- the requests waiting, not the table's history.

-- +goose Up
CREATE INDEX stk_pushes_client_queued_idx ON stk_pushes (client) WHERE stage = 0;

-- +goose Down
DROP INDEX stk_pushes_client_queued_idx;
