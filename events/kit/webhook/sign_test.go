package webhook_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/events/kit/webhook"
)

// The Standard Webhooks specification's test vector (also in its reference
// libraries' tests).
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = 1614265330
	specBody      = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignSpecVector(t *testing.T) {
	s, err := webhook.ParseSecret(specSecret)
	if err != nil {
		t.Fatal(err)
	}
	got := webhook.Sign(specID, time.Unix(specTimestamp, 0), []byte(specBody), s)
	if got != specSignature {
		t.Errorf("Sign = %q, want %q", got, specSignature)
	}
}

func TestSignSeveralSecrets(t *testing.T) {
	a, _ := webhook.ParseSecret(specSecret)
	b, err := webhook.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	got := webhook.Sign(specID, time.Unix(specTimestamp, 0), []byte(specBody), a, b)
	parts := strings.Split(got, " ")
	if len(parts) != 2 || parts[0] != specSignature || !strings.HasPrefix(parts[1], "v1,") {
		t.Errorf("Sign with two secrets = %q, want %q then another v1 signature", got, specSignature)
	}
}

func TestVerify(t *testing.T) {
	s, _ := webhook.ParseSecret(specSecret)
	other, _ := webhook.NewSecret()
	at := time.Unix(specTimestamp, 0)
	ts := "1614265330"
	tests := []struct {
		name      string
		id, ts    string
		body      string
		signature string
		now       time.Time
		ok        bool
	}{
		{"spec vector", specID, ts, specBody, specSignature, at, true},
		{"one of several", specID, ts, specBody, "v1,bm9wZQ== " + specSignature, at, true},
		{"other secret only", specID, ts, specBody, webhook.Sign(specID, at, []byte(specBody), other), at, false},
		{"body changed", specID, ts, specBody + " ", specSignature, at, false},
		{"id changed", specID + "x", ts, specBody, specSignature, at, false},
		{"timestamp changed", specID, "1614265331", specBody, specSignature, at, false},
		{"unknown version", specID, ts, specBody, "v2," + strings.TrimPrefix(specSignature, "v1,"), at, false},
		{"too old", specID, ts, specBody, specSignature, at.Add(6 * time.Minute), false},
		{"too new", specID, ts, specBody, specSignature, at.Add(-6 * time.Minute), false},
		{"timestamp not a number", specID, "x", specBody, specSignature, at, false},
		{"empty header", specID, ts, specBody, "", at, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := webhook.Verify(s, tc.id, tc.ts, tc.signature, []byte(tc.body), tc.now)
			if (err == nil) != tc.ok {
				t.Errorf("Verify = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func TestParseSecret(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{specSecret, true},
		{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", false}, // no prefix: not ours to guess
		{"whsec_", false},
		{"whsec_!!!", false},
		{"whsec_AAAA", false}, // 3 bytes: too short to be a key
	} {
		_, err := webhook.ParseSecret(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseSecret(%q) = %v, want ok %v", tc.in, err, tc.ok)
		}
	}
	s, err := webhook.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	back, err := webhook.ParseSecret(s.String())
	if err != nil || back.String() != s.String() {
		t.Errorf("NewSecret's String does not parse back: %v", err)
	}
}
