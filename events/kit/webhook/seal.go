package webhook

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Sealer encrypts signing secrets at rest (AES-256-GCM) with keys from the
// environment (WEBHOOK_SECRET_KEY): the worker must sign with a secret, so
// it cannot be kept as a one-way digest the way API tokens are; sealed, a
// copy of the database alone does not give the secrets away.
//
// A sealed secret is: version byte 1, the 4-byte id of the key (the start
// of its SHA-256), the 12-byte nonce, then the ciphertext; the endpoint's id
// is the additional data, so a sealed secret copied onto another endpoint
// does not open. Several keys, comma-separated, rotate the key: the first
// seals, any opens.
type Sealer struct{ keys []sealKey }

type sealKey struct {
	id   [4]byte
	aead cipher.AEAD
}

const sealVersion = 1

// NewSealer reads a comma-separated list of base64 32-byte keys. Errors
// never show a key.
func NewSealer(keys string) (*Sealer, error) {
	var s Sealer
	for i, part := range strings.Split(keys, ",") {
		part = strings.TrimSpace(part)
		raw, err := base64.StdEncoding.DecodeString(part)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("webhook secret key %d: want 32 bytes in base64 (openssl rand -base64 32)", i+1)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("webhook secret key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("webhook secret key %d: %w", i+1, err)
		}
		sum := sha256.Sum256(raw)
		s.keys = append(s.keys, sealKey{id: [4]byte(sum[:4]), aead: aead})
	}
	return &s, nil
}

// Seal encrypts secret for endpoint id with the first key.
func (s *Sealer) Seal(endpointID string, secret Secret) ([]byte, error) {
	k := s.keys[0]
	out := make([]byte, 0, 1+4+k.aead.NonceSize()+len(secret.key)+k.aead.Overhead())
	out = append(out, sealVersion)
	out = append(out, k.id[:]...)
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal webhook secret: %w", err)
	}
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, secret.key, []byte(endpointID)), nil
}

// ErrSealedUnknownKey: the secret was sealed with a key the Sealer lacks.
var ErrSealedUnknownKey = errors.New("webhook secret sealed with a key not in WEBHOOK_SECRET_KEY")

// Open decrypts a secret sealed for endpoint id.
func (s *Sealer) Open(endpointID string, sealed []byte) (Secret, error) {
	if len(sealed) < 5 || sealed[0] != sealVersion {
		return Secret{}, errors.New("sealed webhook secret: unknown format")
	}
	for _, k := range s.keys {
		if !bytes.Equal(k.id[:], sealed[1:5]) {
			continue
		}
		rest := sealed[5:]
		if len(rest) < k.aead.NonceSize() {
			return Secret{}, errors.New("sealed webhook secret: truncated")
		}
		key, err := k.aead.Open(nil, rest[:k.aead.NonceSize()], rest[k.aead.NonceSize():], []byte(endpointID))
		if err != nil {
			return Secret{}, errors.New("sealed webhook secret: does not open (tampered, or sealed for another endpoint)")
		}
		return Secret{key: key}, nil
	}
	return Secret{}, ErrSealedUnknownKey
}

// SealedWithFirst reports whether sealed was sealed with the first key,
// the one Seal uses.
func (s *Sealer) SealedWithFirst(sealed []byte) bool {
	return len(sealed) >= 5 && sealed[0] == sealVersion && bytes.Equal(s.keys[0].id[:], sealed[1:5])
}
