// Package idemkey reads the Idempotency-Key header of a push request.
//
// It is package api's parser, in a package of its own so that its fuzz
// target (FuzzIdempotencyKey) builds without the embedded nats-server that
// api's tests link; api keeps its names (IdempotencyHeader,
// MaxIdempotencyKeyLen) and turns a refusal into its 400.
package idemkey

import "net/http"

// Header is the optional header of POST /api/stk-push that makes a retried
// request safe.
const Header = "Idempotency-Key"

// MaxLen is the longest key, in characters.
const MaxLen = 255

// Of returns the request's Idempotency-Key, "" when it has none; ok is
// false when the header is there but is not a valid key (empty, too long,
// not printable ASCII, or given twice).
func Of(h http.Header) (key string, ok bool) {
	vals := h.Values(Header)
	switch len(vals) {
	case 0:
		return "", true
	case 1:
	default:
		return "", false
	}
	k := vals[0]
	if len(k) < 1 || len(k) > MaxLen {
		return "", false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", false
		}
	}
	return k, true
}
