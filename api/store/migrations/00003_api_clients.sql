-- API clients kept in the database (created with stkgate-admin) and the
-- tokens they authenticate with. API_TOKENS clients (development) are not
-- here. Written by stkgate-admin, read by the api.

-- +goose Up
CREATE TABLE api_clients (
    id          bigserial   PRIMARY KEY,
    -- Stored with every record and event of the client; the api's rules
    -- for client names (see API_TOKENS).
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set: none of the client's tokens authenticates.
    disabled_at timestamptz,

    CONSTRAINT api_clients_name_key UNIQUE (name),
    CONSTRAINT api_clients_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$')
);

CREATE TABLE api_tokens (
    -- SHA-256 of the token. A token is 32 random bytes, so an unsalted hash
    -- cannot be reversed by guessing; the token itself is never stored.
    digest      bytea       PRIMARY KEY,
    client_id   bigint      NOT NULL REFERENCES api_clients (id) ON DELETE CASCADE,
    -- The token's first characters ("stk_" and 8 more), to tell tokens
    -- apart in listings and revoke one; 48 of its 256 random bits.
    prefix      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set by a rotation: the token still authenticates until then (grace).
    expires_at  timestamptz,
    -- Set: the token no longer authenticates.
    revoked_at  timestamptz,

    CONSTRAINT api_tokens_digest_check CHECK (length(digest) = 32)
);

CREATE INDEX api_tokens_client_idx ON api_tokens (client_id);
CREATE INDEX api_tokens_prefix_idx ON api_tokens (prefix);

-- +goose Down
DROP TABLE api_tokens;
DROP TABLE api_clients;
