package merchant_test

import (
	"bytes"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/webhooks/merchant"
)

// TestDocShowsThisFile: docs/WEBHOOKS.md shows verify.go from its imports
// on, exactly, in its first go block.
func TestDocShowsThisFile(t *testing.T) {
	src, err := os.ReadFile("verify.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../../docs/WEBHOOKS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := bytes.Cut(doc, []byte("```go\n"))
	block, _, ok2 := bytes.Cut(block, []byte("```\n"))
	if !ok || !ok2 {
		t.Fatal("docs/WEBHOOKS.md has no go block")
	}
	want := src[bytes.Index(src, []byte("import (")):]
	if !bytes.Equal(block, want) {
		t.Errorf("docs/WEBHOOKS.md's go block is not verify.go from its imports on:\n--- doc\n%s\n--- verify.go\n%s", block, want)
	}
}

// TestSpecVector: the Standard Webhooks specification's test vector.
func TestSpecVector(t *testing.T) {
	h := http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	body := []byte(`{"test": 2432232314}`)
	now := time.Unix(1614265330, 0)
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	if err := merchant.VerifyWebhook(secret, h, body, now); err != nil {
		t.Errorf("spec vector: %v", err)
	}
	for name, f := range map[string]func() error{
		"body changed": func() error { return merchant.VerifyWebhook(secret, h, append(body, ' '), now) },
		"too late":     func() error { return merchant.VerifyWebhook(secret, h, body, now.Add(6*time.Minute)) },
		"no prefix":    func() error { return merchant.VerifyWebhook(strings.TrimPrefix(secret, "whsec_"), h, body, now) },
		"other secret": func() error {
			return merchant.VerifyWebhook("whsec_"+strings.Repeat("A", 32), h, body, now)
		},
	} {
		if f() == nil {
			t.Errorf("%s: verified", name)
		}
	}
}
