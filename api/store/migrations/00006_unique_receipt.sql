-- An M-Pesa receipt (transaction_code) is one payment's: two payments
-- recorded as paid by the same receipt would be one payment counted twice.
-- The projector applies a completion whose receipt another payment already
-- holds as an invalid outcome without it (store.Apply); this index is what
-- makes that hold between concurrent projectors. Receipts are compared
-- without regard to case: Safaricom writes them in capitals, and a copy in
-- lower case is the same receipt.
--
-- A database that already holds a receipt twice fails this migration, and
-- Postgres names the receipt: an operator reconciles those payments first.

-- +goose Up
CREATE UNIQUE INDEX stk_pushes_transaction_code_key ON stk_pushes (upper(transaction_code))
    WHERE transaction_code IS NOT NULL;

-- +goose Down
DROP INDEX stk_pushes_transaction_code_key;
