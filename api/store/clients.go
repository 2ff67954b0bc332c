package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// API clients and their tokens (tables api_clients and api_tokens): created
// by stkgate-admin, read by the api to authenticate. Only a token's SHA-256
// digest is stored; the token itself is shown once, when it is made.

// Token format: TokenPrefix and 32 random bytes in unpadded base64url.
const (
	TokenPrefix = "stk_"
	tokenBytes  = 32
	// TokenLen is the length of every token NewToken makes.
	TokenLen = len(TokenPrefix) + (tokenBytes*8+5)/6
	// TokenIDLen is the length of a token's id: its first characters, kept
	// in clear to tell tokens apart.
	TokenIDLen = len(TokenPrefix) + 8
)

// TokenDigest is the SHA-256 a token is stored and looked up by. A token
// is 256 random bits, so no salt or slow hash is needed: there is nothing
// to guess from the digest.
type TokenDigest [sha256.Size]byte

// DigestOf is the digest of token.
func DigestOf(token string) TokenDigest { return sha256.Sum256([]byte(token)) }

// NewToken makes a token: TokenPrefix and 32 bytes of crypto/rand.
func NewToken() (string, error) {
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// WellFormedToken reports whether s has the shape of a token NewToken
// makes, so that anything else is refused without a database lookup.
func WellFormedToken(s string) bool {
	if len(s) != TokenLen || !strings.HasPrefix(s, TokenPrefix) {
		return false
	}
	for _, r := range s[len(TokenPrefix):] {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// TokenID is the id of token: its first TokenIDLen characters.
func TokenID(token string) string {
	if len(token) < TokenIDLen {
		return token
	}
	return token[:TokenIDLen]
}

// Errors of the client and token functions.
var (
	ErrClientExists   = errors.New("client already exists")
	ErrClientNotFound = errors.New("client not found")
	ErrTokenExists    = errors.New("token already exists")
	ErrTokenNotFound  = errors.New("token not found")
	ErrTokenAmbiguous = errors.New("token id matches more than one token")
)

// Constraints whose violation is a domain error.
const (
	clientsNameKey = "api_clients_name_key"
	tokensPKey     = "api_tokens_pkey"
)

// Client is an API client kept in the database.
type Client struct {
	Name       string
	CreatedAt  time.Time
	DisabledAt time.Time // zero while enabled
	// ActiveTokens counts the tokens that authenticate now (not revoked,
	// not expired), whether or not the client is disabled.
	ActiveTokens int
}

// Token is what is known of a token: never the token itself.
type Token struct {
	ID        string // its first characters, see TokenID
	Client    string
	CreatedAt time.Time
	ExpiresAt time.Time // zero: does not expire
	RevokedAt time.Time // zero: not revoked
	Active    bool      // neither revoked nor expired (at the database's clock)
}

// TokenMatch is a token that authenticates, as LookupToken finds it.
type TokenMatch struct {
	Digest TokenDigest
	Client string
	// ExpiresIn is how long the token still authenticates (at the
	// database's clock); 0 when it has no expiry.
	ExpiresIn time.Duration
}

type clientRow struct {
	Name         string       `db:"name"`
	CreatedAt    time.Time    `db:"created_at"`
	DisabledAt   sql.NullTime `db:"disabled_at"`
	ActiveTokens int          `db:"active_tokens"`
}

type tokenRow struct {
	Prefix    string       `db:"prefix"`
	Client    string       `db:"client"`
	CreatedAt time.Time    `db:"created_at"`
	ExpiresAt sql.NullTime `db:"expires_at"`
	RevokedAt sql.NullTime `db:"revoked_at"`
	Active    bool         `db:"active"`
}

type matchRow struct {
	Digest    []byte        `db:"digest"`
	Client    string        `db:"client"`
	ExpiresIn sql.NullInt64 `db:"expires_in_us"`
}

func (r clientRow) client() Client {
	return Client{Name: r.Name, CreatedAt: r.CreatedAt.UTC(), DisabledAt: timeOf(r.DisabledAt), ActiveTokens: r.ActiveTokens}
}

func (r tokenRow) token() Token {
	return Token{ID: r.Prefix, Client: r.Client, CreatedAt: r.CreatedAt.UTC(),
		ExpiresAt: timeOf(r.ExpiresAt), RevokedAt: timeOf(r.RevokedAt), Active: r.Active}
}

func timeOf(t sql.NullTime) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

// activeToken is the SQL condition of a token t that authenticates, its
// client aside.
const activeToken = `(t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()))`

// uniqueViolation reports whether err is a unique violation of constraint.
func uniqueViolation(err error, constraint string) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "23505" && pqErr.Constraint == constraint
}

// CreateClient adds the client name with its first token, given by its
// digest and id. ErrClientExists if the name is taken.
func (s *Store) CreateClient(ctx context.Context, name string, digest TokenDigest, tokenID string) error {
	return s.inTx(ctx, "create client "+name, func(tx *sqlx.Tx) error {
		var id int64
		err := tx.GetContext(ctx, &id, `INSERT INTO api_clients (name) VALUES ($1) RETURNING id`, name)
		if uniqueViolation(err, clientsNameKey) {
			return ErrClientExists
		}
		if err != nil {
			return err
		}
		return insertToken(ctx, tx, id, digest, tokenID)
	})
}

func insertToken(ctx context.Context, tx *sqlx.Tx, clientID int64, digest TokenDigest, tokenID string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO api_tokens (digest, client_id, prefix) VALUES ($1, $2, $3)`,
		digest[:], clientID, tokenID)
	if uniqueViolation(err, tokensPKey) {
		return ErrTokenExists
	}
	return err
}

// Clients lists the clients by name.
func (s *Store) Clients(ctx context.Context) ([]Client, error) {
	var rows []clientRow
	err := s.db.SelectContext(ctx, &rows, `
		SELECT c.name, c.created_at, c.disabled_at,
			(SELECT count(*) FROM api_tokens t WHERE t.client_id = c.id AND `+activeToken+`) AS active_tokens
		FROM api_clients c ORDER BY c.name`)
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	out := make([]Client, len(rows))
	for i, r := range rows {
		out[i] = r.client()
	}
	return out, nil
}

// ClientsNamed returns those of names that are clients in the database.
func (s *Store) ClientsNamed(ctx context.Context, names []string) ([]string, error) {
	var out []string
	if err := s.db.SelectContext(ctx, &out, `SELECT name FROM api_clients WHERE name = ANY($1) ORDER BY name`,
		pq.Array(names)); err != nil {
		return nil, fmt.Errorf("look up client names: %w", err)
	}
	return out, nil
}

// SetClientDisabled disables (or enables again) the client name: a disabled
// client's tokens do not authenticate. changed is false when it already
// was so. ErrClientNotFound for an unknown name.
func (s *Store) SetClientDisabled(ctx context.Context, name string, disabled bool) (changed bool, err error) {
	var state sql.NullBool
	err = s.db.GetContext(ctx, &state, `
		WITH c AS (SELECT id, disabled_at IS NOT NULL AS was FROM api_clients WHERE name = $1),
		u AS (
			UPDATE api_clients SET disabled_at = CASE WHEN $2 THEN now() END
			FROM c WHERE api_clients.id = c.id AND c.was <> $2
			RETURNING api_clients.id)
		SELECT c.was <> $2 FROM c`, name, disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return false, ErrClientNotFound
	}
	if err != nil {
		return false, fmt.Errorf("disable client %s: %w", name, err)
	}
	return state.Bool, nil
}

// lockClient is the id of the client name, locked until tx ends so that two
// changes of one client's tokens take turns. ErrClientNotFound for an
// unknown name.
func lockClient(ctx context.Context, tx *sqlx.Tx, name string) (int64, error) {
	var id int64
	err := tx.GetContext(ctx, &id, `SELECT id FROM api_clients WHERE name = $1 FOR UPDATE`, name)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrClientNotFound
	}
	return id, err
}

// RotateToken gives the client name a new token, given by its digest and
// id, and makes its other active tokens expire after grace (0: at once; a
// token that already expires sooner keeps its expiry). It returns how many
// tokens were set to expire. ErrClientNotFound for an unknown name.
func (s *Store) RotateToken(ctx context.Context, name string, digest TokenDigest, tokenID string, grace time.Duration) (int64, error) {
	if grace < 0 {
		return 0, errors.New("rotate token: negative grace")
	}
	var n int64
	err := s.inTx(ctx, "rotate token of "+name, func(tx *sqlx.Tx) error {
		id, err := lockClient(ctx, tx, name)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `
			UPDATE api_tokens t SET expires_at = now() + $2 * interval '1 microsecond'
			WHERE t.client_id = $1 AND `+activeToken+`
				AND (t.expires_at IS NULL OR t.expires_at > now() + $2 * interval '1 microsecond')`,
			id, grace.Microseconds())
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		return insertToken(ctx, tx, id, digest, tokenID)
	})
	return n, err
}

// RevokeClientTokens revokes every token of the client name that is not
// revoked yet, and returns how many. ErrClientNotFound for an unknown name.
func (s *Store) RevokeClientTokens(ctx context.Context, name string) (int64, error) {
	var n int64
	err := s.inTx(ctx, "revoke tokens of "+name, func(tx *sqlx.Tx) error {
		id, err := lockClient(ctx, tx, name)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE api_tokens SET revoked_at = now() WHERE client_id = $1 AND revoked_at IS NULL`, id)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// RevokeToken revokes the one token whose id is tokenID and returns it.
// ErrTokenNotFound if none has it, ErrTokenAmbiguous if several do
// (nothing is revoked then). Revoking a revoked token changes nothing.
func (s *Store) RevokeToken(ctx context.Context, tokenID string) (Token, error) {
	var tok Token
	err := s.inTx(ctx, "revoke token "+tokenID, func(tx *sqlx.Tx) error {
		var rows []tokenRow
		if err := tx.SelectContext(ctx, &rows, `
			UPDATE api_tokens t SET revoked_at = coalesce(t.revoked_at, now())
			FROM api_clients c
			WHERE c.id = t.client_id AND t.prefix = $1
			RETURNING t.prefix, c.name AS client, t.created_at, t.expires_at, t.revoked_at, false AS active`,
			tokenID); err != nil {
			return err
		}
		switch len(rows) {
		case 0:
			return ErrTokenNotFound
		case 1:
			tok = rows[0].token()
			return nil
		}
		return ErrTokenAmbiguous // rolls the revocations back
	})
	return tok, err
}

// Tokens lists the tokens of the client name, newest first.
// ErrClientNotFound for an unknown name.
func (s *Store) Tokens(ctx context.Context, name string) ([]Token, error) {
	var rows []tokenRow
	err := s.db.SelectContext(ctx, &rows, `
		SELECT t.prefix, c.name AS client, t.created_at, t.expires_at, t.revoked_at, `+activeToken+` AS active
		FROM api_clients c LEFT JOIN api_tokens t ON t.client_id = c.id
		WHERE c.name = $1 ORDER BY t.created_at DESC NULLS LAST, t.prefix`, name)
	if err != nil {
		return nil, fmt.Errorf("list tokens of %s: %w", name, err)
	}
	if len(rows) == 0 {
		return nil, ErrClientNotFound
	}
	var out []Token
	for _, r := range rows {
		if r.Prefix != "" { // the client without tokens: the LEFT JOIN's row
			out = append(out, r.token())
		}
	}
	return out, nil
}

// LookupToken finds the client of the token whose digest is d, if the token
// authenticates now: it exists, is neither revoked nor expired, and its
// client is not disabled. Anything else is ErrTokenNotFound, whatever the
// reason, so that callers cannot answer differently.
func (s *Store) LookupToken(ctx context.Context, d TokenDigest) (TokenMatch, error) {
	var r matchRow
	err := s.db.GetContext(ctx, &r, `
		SELECT t.digest, c.name AS client,
			(extract(epoch FROM t.expires_at - now()) * 1000000)::bigint AS expires_in_us
		FROM api_tokens t JOIN api_clients c ON c.id = t.client_id
		WHERE t.digest = $1 AND c.disabled_at IS NULL AND `+activeToken, d[:])
	if errors.Is(err, sql.ErrNoRows) {
		return TokenMatch{}, ErrTokenNotFound
	}
	if err != nil {
		return TokenMatch{}, fmt.Errorf("look up token: %w", err)
	}
	m := TokenMatch{Client: r.Client}
	if copy(m.Digest[:], r.Digest) != len(m.Digest) {
		return TokenMatch{}, errors.New("look up token: stored digest has the wrong length")
	}
	if r.ExpiresIn.Valid {
		m.ExpiresIn = max(time.Duration(r.ExpiresIn.Int64)*time.Microsecond, time.Microsecond)
	}
	return m, nil
}

// ActiveTokenDigests lists the digests of up to limit tokens that
// authenticate now (those LookupToken finds), newest first.
func (s *Store) ActiveTokenDigests(ctx context.Context, limit int) ([]TokenDigest, error) {
	var rows [][]byte
	err := s.db.SelectContext(ctx, &rows, `
		SELECT t.digest
		FROM api_tokens t JOIN api_clients c ON c.id = t.client_id
		WHERE c.disabled_at IS NULL AND `+activeToken+`
		ORDER BY t.created_at DESC, t.digest LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list active token digests: %w", err)
	}
	out := make([]TokenDigest, len(rows))
	for i, r := range rows {
		if copy(out[i][:], r) != len(out[i]) {
			return nil, errors.New("list active token digests: a stored digest has the wrong length")
		}
	}
	return out, nil
}

// inTx runs f in a transaction, committed if f returns nil; errors are
// wrapped with what.
func (s *Store) inTx(ctx context.Context, what string, f func(*sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := f(tx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
