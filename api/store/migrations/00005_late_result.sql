-- Daraja's own outcome of a payment learnt after stkgate had finished it
-- with a stkgate.* code (stk.late_result): shown beside the final outcome
-- (meta.late_result), never in its place. Written only by the projector.

-- +goose Up
-- NULL until a late result is applied; then the first one, for good.
ALTER TABLE stk_pushes ADD COLUMN late_result jsonb;

-- +goose Down
ALTER TABLE stk_pushes DROP COLUMN late_result;
