// Package merchant is the code docs/WEBHOOKS.md gives merchants to verify a
// delivery, kept here so that it is compiled and tested against real
// deliveries (dispatcher/webhooks: TestMerchantSnippet); the document shows
// this file from its imports on, and TestDocShowsThisFile holds it to that.
// The standard library only, so that it can be copied as it is.
package merchant

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// VerifyWebhook checks a delivery from stkgate: secret is the endpoint's
// signing secret (whsec_…), body the request's body exactly as received.
// It returns nil when one of the signatures is the secret's and the
// timestamp is within 5 minutes of now; otherwise answer 400 and drop it.
func VerifyWebhook(secret string, header http.Header, body []byte, now time.Time) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || !strings.HasPrefix(secret, "whsec_") {
		return errors.New("webhook: the secret is not whsec_<base64>")
	}
	id, ts := header.Get("webhook-id"), header.Get("webhook-timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("webhook: no timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("webhook: timestamp too far from now (a replay?)")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	// Several signatures, space-separated, while a secret is rotated.
	for _, sig := range strings.Fields(header.Get("webhook-signature")) {
		b64, ok := strings.CutPrefix(sig, "v1,")
		got, err := base64.StdEncoding.DecodeString(b64)
		if ok && err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("webhook: no valid signature")
}
