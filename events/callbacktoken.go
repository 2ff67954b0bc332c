package events

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/stkgate/stkgate/events/kit/envconf"
)

// MinCallbackSecretLen is the shortest CALLBACK_SECRET accepted, in bytes.
const MinCallbackSecretLen = 32

// callbackTokenDomain separates the callback token's HMAC from any other use
// of the same secret: a token is HMAC-SHA256(secret, domain || tracking id).
const callbackTokenDomain = "stkgate/callback-token/v1\x00"

// callbackTokenLen is the length of a token: base64url, no padding, of the
// whole 256-bit HMAC.
var callbackTokenLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// CallbackSecrets are the keys of the per-request callback token
// (CALLBACK_SECRET, a comma-separated list "new,old,…"): tokens are signed
// with the first and accepted when any of them signed it, so a secret can be
// rotated while the callbacks of pushes sent under the old one are still on
// their way. The zero value holds no key: it signs nothing and accepts
// nothing.
type CallbackSecrets struct {
	keys [][]byte
}

// ParseCallbackSecrets reads a CALLBACK_SECRET value. Each secret is used as
// its bytes (after trimming white space) and must be at least
// MinCallbackSecretLen long. The error never quotes a secret.
func ParseCallbackSecrets(list string) (CallbackSecrets, error) {
	if strings.TrimSpace(list) == "" {
		return CallbackSecrets{}, errors.New("required: at least one secret of 32 bytes or more (e.g. openssl rand -base64 32)")
	}
	var s CallbackSecrets
	for i, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if len(part) < MinCallbackSecretLen {
			return CallbackSecrets{}, fmt.Errorf("secret %d of the list is %d bytes long; want at least %d", i+1, len(part), MinCallbackSecretLen)
		}
		s.keys = append(s.keys, []byte(part))
	}
	return s, nil
}

// CallbackSecretsFromEnv reads CALLBACK_SECRET through e, for the
// dispatcher, which signs with it, and callback-ingest, which verifies.
func CallbackSecretsFromEnv(e *envconf.Env) CallbackSecrets {
	s, err := ParseCallbackSecrets(e.Raw("CALLBACK_SECRET"))
	if err != nil {
		e.Fail("CALLBACK_SECRET", err)
	}
	return s
}

// GenerateCallbackSecret returns a fresh random secret (256 bits, base64url)
// for the dev stack.
func GenerateCallbackSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate callback secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Len is the number of secrets; 0 for the zero value.
func (s CallbackSecrets) Len() int { return len(s.keys) }

// Token is the callback token of trackingID, signed with the first secret;
// "" when there is no secret.
func (s CallbackSecrets) Token(trackingID string) string {
	if len(s.keys) == 0 {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(callbackMAC(s.keys[0], trackingID))
}

// Verify reports whether token is the callback token of trackingID under
// any of the secrets. The comparison is constant-time.
func (s CallbackSecrets) Verify(trackingID, token string) bool {
	if len(token) != callbackTokenLen {
		return false
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil {
		return false
	}
	ok := false
	for _, k := range s.keys {
		// Every key is tried, so the time taken does not say which matched.
		if hmac.Equal(got, callbackMAC(k, trackingID)) {
			ok = true
		}
	}
	return ok
}

// LogValue never shows a secret, only how many there are.
func (s CallbackSecrets) LogValue() slog.Value {
	if len(s.keys) == 0 {
		return slog.StringValue("")
	}
	return slog.StringValue(fmt.Sprintf("[redacted: %d secret(s)]", len(s.keys)))
}

// String never shows a secret either (fmt's %v).
func (s CallbackSecrets) String() string { return "[redacted]" }

// Equal reports whether s and o hold the same secrets in the same order
// (for tests, and go-cmp).
func (s CallbackSecrets) Equal(o CallbackSecrets) bool {
	if len(s.keys) != len(o.keys) {
		return false
	}
	for i := range s.keys {
		if !hmac.Equal(s.keys[i], o.keys[i]) {
			return false
		}
	}
	return true
}

func callbackMAC(key []byte, trackingID string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(callbackTokenDomain))
	m.Write([]byte(trackingID))
	return m.Sum(nil)
}

// ParseCallbackPath splits the path of a request under CallbackPath into the
// tracking id and the token: "<CallbackPath><id>/<token>". A path naming
// only the id (a push from before callback tokens) gives an empty token.
// ok is false for any other path: not under CallbackPath, no id, more
// segments. Neither value is checked further: the caller validates the id
// and verifies the token.
func ParseCallbackPath(path string) (trackingID, token string, ok bool) {
	rest, found := strings.CutPrefix(path, CallbackPath)
	if !found {
		return "", "", false
	}
	trackingID, token, _ = strings.Cut(rest, "/")
	if trackingID == "" || strings.Contains(token, "/") {
		return "", "", false
	}
	return trackingID, token, true
}
