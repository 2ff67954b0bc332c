-- A client's requests accepted and not yet dispatched (stage 0): what the
-- api counts, on every api instance, to cap each client's requests waiting
-- in the dispatcher's queue (API_CLIENT_MAX_QUEUED). Partial, so its size is
-- the requests waiting, not the table's history.
--
-- Built CONCURRENTLY, outside a transaction, so that a large table keeps
-- taking writes while it is built; an invalid index left by a build cut off
-- half-way is dropped and built again.

-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS stk_pushes_client_queued_idx;

CREATE INDEX CONCURRENTLY stk_pushes_client_queued_idx ON stk_pushes (client) WHERE stage = 0;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS stk_pushes_client_queued_idx;
