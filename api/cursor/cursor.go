// Package cursor makes and reads the cursors of the api's search
// (GET /api/stk-push?…): the position of a page's last record, opaque to
// the client.
//
// It is package api's parser, in a package of its own so that its fuzz
// target (FuzzDecode) builds without the embedded nats-server that api's
// tests link.
//
// A cursor is unpadded base64url of 25 bytes: a version (1), the record's
// created_at in microseconds since 1970 and its id (each big-endian int64),
// and the first 8 bytes of the SHA-256 of those and the scope. The scope
// is the client and the query's filters (Scope), so a cursor read under
// another client or other filters, or changed in any way, is ErrInvalid.
// The check is not a secret's MAC: who knows this package can forge a
// cursor for a scope of their own, and that is harmless, since a cursor is
// only ever a position within the caller's own records (the search is
// always bounded to them); what it holds, a time and the id of one of those
// records, the records themselves show.
package cursor

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"
)

// Position is a record's place in the search's order: created_at, then id,
// both descending.
type Position struct {
	At time.Time
	ID int64
}

const (
	version  = 1
	rawLen   = 1 + 8 + 8 + checkLen
	checkLen = 8
)

// Len is the length of every cursor.
var Len = base64.RawURLEncoding.EncodedLen(rawLen)

// ErrInvalid is a cursor Decode does not take.
var ErrInvalid = errors.New("invalid cursor")

// The times a cursor holds: those of Postgres's timestamptz that RFC 3339
// can write, years 1 to 9999.
var (
	minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// Scope is what a cursor is good for: the caller's client and the parts of
// its query that choose the records, in a fixed order. Each part is
// length-prefixed, so no two lists of parts have the same scope.
func Scope(parts ...string) []byte {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return h.Sum(nil)
}

// Encode is the cursor of p under scope. p.At is kept to the microsecond,
// Postgres's precision.
func Encode(p Position, scope []byte) string {
	b := make([]byte, rawLen)
	b[0] = version
	binary.BigEndian.PutUint64(b[1:9], uint64(p.At.UnixMicro()))
	binary.BigEndian.PutUint64(b[9:17], uint64(p.ID))
	copy(b[17:], check(b[:17], scope))
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode reads a cursor Encode made under scope. Every other string, of
// any length, is ErrInvalid.
func Decode(s string, scope []byte) (Position, error) {
	if len(s) != Len {
		return Position{}, ErrInvalid
	}
	// Strict: the unused bits of the last character must be zero, so that
	// a position has exactly one cursor.
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != rawLen || b[0] != version {
		return Position{}, ErrInvalid
	}
	if !bytes.Equal(b[17:], check(b[:17], scope)) {
		return Position{}, ErrInvalid
	}
	p := Position{
		At: time.UnixMicro(int64(binary.BigEndian.Uint64(b[1:9]))).UTC(),
		ID: int64(binary.BigEndian.Uint64(b[9:17])),
	}
	if p.ID < 1 || p.At.Before(minTime) || p.At.After(maxTime) {
		return Position{}, ErrInvalid
	}
	return p, nil
}

func check(body, scope []byte) []byte {
	h := sha256.New()
	h.Write(body)
	h.Write(scope)
	return h.Sum(nil)[:checkLen]
}
