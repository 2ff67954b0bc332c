-- A client's records by its own reference, and by the customer's phone,
-- newest first: what GET /api/stk-push?reference=…&phone=… reads (Search),
-- a page at a time in the order (created_at DESC, id DESC) its cursors
-- follow. Without a filter, or with status or since only, the search reads
-- stk_pushes_client_created_idx (migration 1) in that same order.
--
-- Built CONCURRENTLY, outside a transaction, so that a large table keeps
-- taking writes while it is built; an invalid index left by a build cut off
-- half-way is dropped and built again.

-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS stk_pushes_client_reference_idx;

CREATE INDEX CONCURRENTLY stk_pushes_client_reference_idx
    ON stk_pushes (client, reference, created_at DESC, id DESC);

DROP INDEX CONCURRENTLY IF EXISTS stk_pushes_client_phone_idx;

CREATE INDEX CONCURRENTLY stk_pushes_client_phone_idx
    ON stk_pushes (client, phone_number, created_at DESC, id DESC);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS stk_pushes_client_phone_idx;
DROP INDEX CONCURRENTLY IF EXISTS stk_pushes_client_reference_idx;
