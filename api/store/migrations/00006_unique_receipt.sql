-- An M-Pesa receipt (transaction_code) is one payment's: two payments
-- recorded as paid by the same receipt would be one payment counted twice.
-- The projector applies a completion whose receipt another payment already
-- holds as an invalid outcome without it (store.Apply); this index is what
-- makes that hold between concurrent projectors. Receipts are compared
-- without regard to case: Safaricom writes them in capitals, and a copy in
-- lower case is the same receipt.
--
-- Built CONCURRENTLY, outside a transaction, so that a large table keeps
-- taking writes (the projector's, the api's) while it is built. A build cut
-- off half-way leaves an invalid index of the same name: it is dropped
-- first and built again.
--
-- A database that already holds a receipt on two payments cannot take the
-- index: the migration stops before building anything and names one such
-- receipt; docs/OPERATIONS.md ("Migration 6 stops on a receipt held twice")
-- has the query that lists them all. Nothing here changes a payment: which
-- of them the receipt belongs to is the operator's call.

-- +goose NO TRANSACTION
-- +goose Up
-- +goose StatementBegin
DO $$
DECLARE
    receipt text;
    held    bigint;
    total   bigint;
BEGIN
    SELECT d.receipt, d.held, count(*) OVER ()
      INTO receipt, held, total
      FROM (SELECT upper(transaction_code) AS receipt, count(*) AS held
              FROM stk_pushes WHERE transaction_code IS NOT NULL
             GROUP BY 1 HAVING count(*) > 1) d
     ORDER BY d.receipt LIMIT 1;
    IF receipt IS NOT NULL THEN
        RAISE EXCEPTION 'receipt % is held by % payments (% receipts are held by more than one): reconcile them before receipts can be made unique; see docs/OPERATIONS.md', receipt, held, total;
    END IF;
END $$;
-- +goose StatementEnd

DROP INDEX CONCURRENTLY IF EXISTS stk_pushes_transaction_code_key;

CREATE UNIQUE INDEX CONCURRENTLY stk_pushes_transaction_code_key ON stk_pushes (upper(transaction_code))
    WHERE transaction_code IS NOT NULL;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS stk_pushes_transaction_code_key;
