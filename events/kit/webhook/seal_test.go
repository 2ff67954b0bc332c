package webhook_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/events/kit/webhook"
)

func newKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

func TestSealer(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	old, err := webhook.NewSealer(k1)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := webhook.NewSecret()
	sealed, err := old.Seal("ep_1", s)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(s.String())) || bytes.Contains(sealed, []byte(strings.TrimPrefix(s.String(), "whsec_"))) {
		t.Fatal("sealed secret holds the secret in clear")
	}
	got, err := old.Open("ep_1", sealed)
	if err != nil || got.String() != s.String() {
		t.Fatalf("Open = %v, %v", got.String() == s.String(), err)
	}
	if _, err := old.Open("ep_2", sealed); err == nil {
		t.Error("a secret sealed for one endpoint opened for another")
	}
	// Key rotation: the new key first seals, the old one still opens.
	both, err := webhook.NewSealer(k2 + "," + k1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := both.Open("ep_1", sealed); err != nil || got.String() != s.String() {
		t.Errorf("rotated sealer cannot open a secret sealed with the old key: %v", err)
	}
	resealed, _ := both.Seal("ep_1", s)
	if _, err := old.Open("ep_1", resealed); err == nil {
		t.Error("sealed with the old key, not the first one")
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := old.Open("ep_1", tampered); err == nil {
		t.Error("tampered sealed secret opened")
	}
}

func TestNewSealerRefuses(t *testing.T) {
	for _, in := range []string{"", "short", base64.StdEncoding.EncodeToString(make([]byte, 16)), newKey(t) + ",???"} {
		if _, err := webhook.NewSealer(in); err == nil {
			t.Errorf("NewSealer(%q) accepted", in)
		} else if strings.Contains(err.Error(), in) && in != "" {
			t.Errorf("error shows the key: %v", err)
		}
	}
}
