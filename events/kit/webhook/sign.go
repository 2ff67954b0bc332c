// Package webhook is the plumbing of stkgate's outbound webhooks, shared by
// the delivery worker and stkgate-admin: signatures in the Standard Webhooks
// format (standardwebhooks.com), the signing secrets, their encryption at
// rest, and an HTTP client that refuses to reach the gateway's own networks.
//
// No Go library of the format is served to this project, so the format is
// written here, small, and held to the specification's test vector.
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery (Standard Webhooks).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every signing secret as it is shown to a merchant.
const SecretPrefix = "whsec_"

// SecretBytes is the length of a new secret's key: 256 bits, HMAC-SHA256's
// block-size-independent full strength.
const SecretBytes = 32

// minSecretBytes: a shorter key is refused (the specification asks for 24
// to 64 bytes).
const minSecretBytes = 24

// Tolerance is how far a delivery's timestamp may be from the receiver's
// clock before Verify refuses it (replay protection).
const Tolerance = 5 * time.Minute

// Secret is an endpoint's signing key.
type Secret struct{ key []byte }

// NewSecret makes a random secret.
func NewSecret() (Secret, error) {
	k := make([]byte, SecretBytes)
	if _, err := rand.Read(k); err != nil {
		return Secret{}, fmt.Errorf("new webhook secret: %w", err)
	}
	return Secret{key: k}, nil
}

// ParseSecret reads whsec_<base64>.
func ParseSecret(s string) (Secret, error) {
	b64, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return Secret{}, errors.New("webhook secret: does not start with " + SecretPrefix)
	}
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return Secret{}, errors.New("webhook secret: not base64 after " + SecretPrefix)
	}
	if len(k) < minSecretBytes || len(k) > 64 {
		return Secret{}, fmt.Errorf("webhook secret: key of %d bytes, want 24 to 64", len(k))
	}
	return Secret{key: k}, nil
}

// String is whsec_<base64>: the secret itself, to print once and to seal.
// Never log it.
func (s Secret) String() string {
	return SecretPrefix + base64.StdEncoding.EncodeToString(s.key)
}

// IsZero reports whether s holds no key.
func (s Secret) IsZero() bool { return len(s.key) == 0 }

// Sign is the webhook-signature header: "v1,<base64 HMAC-SHA256 of
// id.timestamp.body>" for each secret, space-separated (during a rotation
// the new and the previous secret both sign, so a receiver holding either
// accepts the delivery).
func Sign(id string, at time.Time, body []byte, secrets ...Secret) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac(s.key, id, ts, body)))
	}
	return strings.Join(sigs, " ")
}

func mac(key []byte, id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// ErrVerify is every refusal of Verify.
var ErrVerify = errors.New("webhook signature not verified")

// Verify checks a delivery as a receiver does: one v1 signature of the
// header matches secret, and the timestamp is within Tolerance of now.
func Verify(secret Secret, id, timestamp, signatures string, body []byte, now time.Time) error {
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q", ErrVerify, timestamp)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > Tolerance || d < -Tolerance {
		return fmt.Errorf("%w: timestamp %s from now", ErrVerify, d.Round(time.Second))
	}
	want := mac(secret.key, id, timestamp, body)
	for _, sig := range strings.Fields(signatures) {
		b64, ok := strings.CutPrefix(sig, "v1,")
		if !ok {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("%w: no matching v1 signature", ErrVerify)
}
