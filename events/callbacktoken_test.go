package events

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const (
	secretA = "callback-secret-A-0123456789abcdefghij"
	secretB = "callback-secret-B-0123456789abcdefghij"
	idOne   = "0f8fad5b-d9cb-469f-a165-70867728950e"
	idTwo   = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
)

func mustSecrets(t *testing.T, list string) CallbackSecrets {
	t.Helper()
	s, err := ParseCallbackSecrets(list)
	if err != nil {
		t.Fatalf("ParseCallbackSecrets: %v", err)
	}
	return s
}

func TestParseCallbackSecrets(t *testing.T) {
	tests := []struct {
		name, list string
		n          int
		err        string
	}{
		{"one", secretA, 1, ""},
		{"rotation", secretA + "," + secretB, 2, ""},
		{"spaces trimmed", " " + secretA + " , " + secretB + " ", 2, ""},
		{"empty", "", 0, "required"},
		{"blank", "  ", 0, "required"},
		{"short", "short-secret", 0, "secret 1 of the list is 12 bytes long"},
		{"31 bytes", strings.Repeat("x", 31), 0, "want at least 32"},
		{"short old one", secretA + ",tiny", 0, "secret 2 of the list"},
		{"empty entry", secretA + ",", 0, "secret 2 of the list is 0 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseCallbackSecrets(tc.list)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "short-secret") || strings.Contains(err.Error(), "tiny") {
					t.Fatalf("error quotes the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Len() != tc.n {
				t.Fatalf("Len = %d, want %d", s.Len(), tc.n)
			}
		})
	}
}

func TestCallbackToken(t *testing.T) {
	a := mustSecrets(t, secretA)
	b := mustSecrets(t, secretB)
	rotated := mustSecrets(t, secretB+","+secretA)

	tok := a.Token(idOne)
	if len(tok) < 22 { // 128 bits in base64url
		t.Fatalf("token %q shorter than 128 bits", tok)
	}
	if strings.Trim(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		t.Fatalf("token %q is not base64url without padding", tok)
	}
	if tok != a.Token(idOne) {
		t.Fatal("token not deterministic")
	}
	if rotated.Token(idOne) != b.Token(idOne) {
		t.Fatal("a rotated list does not sign with its first secret")
	}

	flip := []byte(tok)
	if flip[5] == 'A' {
		flip[5] = 'B'
	} else {
		flip[5] = 'A'
	}
	tests := []struct {
		name    string
		secrets CallbackSecrets
		id, tok string
		want    bool
	}{
		{"genuine", a, idOne, tok, true},
		{"old secret still verifies after rotation", rotated, idOne, tok, true},
		{"new secret verifies after rotation", rotated, idOne, rotated.Token(idOne), true},
		{"other secret", b, idOne, tok, false},
		{"token of another id", a, idTwo, tok, false},
		{"no token", a, idOne, "", false},
		{"one character changed", a, idOne, string(flip), false},
		{"truncated", a, idOne, tok[:len(tok)-1], false},
		{"padded", a, idOne, tok + "=", false},
		{"standard base64", a, idOne, strings.NewReplacer("-", "+", "_", "/").Replace(tok), tok == strings.NewReplacer("-", "+", "_", "/").Replace(tok)},
		{"upper-cased id", a, strings.ToUpper(idOne), tok, false},
		{"no secrets accept nothing", CallbackSecrets{}, idOne, tok, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.secrets.Verify(tc.id, tc.tok); got != tc.want {
				t.Fatalf("Verify(%q, %q) = %v, want %v", tc.id, tc.tok, got, tc.want)
			}
		})
	}
	if (CallbackSecrets{}).Token(idOne) != "" {
		t.Fatal("the zero value signs")
	}
}

func TestCallbackSecretsNeverPrinted(t *testing.T) {
	s := mustSecrets(t, secretA+","+secretB)
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "secret", s)
	out := b.String() + fmt.Sprint(s) + fmt.Sprintf("%+v %#v", s, s)
	for _, secret := range []string{secretA, secretB, "callback-secret"} {
		if strings.Contains(out, secret) {
			t.Fatalf("secret printed: %s", out)
		}
	}
	if !strings.Contains(out, "2 secret(s)") {
		t.Fatalf("count not printed: %s", out)
	}
}

func TestGenerateCallbackSecret(t *testing.T) {
	a, err := GenerateCallbackSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateCallbackSecret()
	if a == b {
		t.Fatal("two generated secrets are equal")
	}
	if _, err := ParseCallbackSecrets(a); err != nil {
		t.Fatalf("generated secret refused: %v", err)
	}
}

func TestParseCallbackPath(t *testing.T) {
	tests := []struct {
		path, id, tok string
		ok            bool
	}{
		{"/hooks/stk-push/" + idOne + "/tok", idOne, "tok", true},
		{"/hooks/stk-push/" + idOne, idOne, "", true},
		{"/hooks/stk-push/" + idOne + "/", idOne, "", true},
		{"/hooks/stk-push/", "", "", false},
		{"/hooks/stk-push", "", "", false},
		{"/hooks/stk-push//tok", "", "", false},
		{"/hooks/stk-push/" + idOne + "/tok/more", "", "", false},
		{"/other/" + idOne + "/tok", "", "", false},
	}
	for _, tc := range tests {
		id, tok, ok := ParseCallbackPath(tc.path)
		if id != tc.id || tok != tc.tok || ok != tc.ok {
			t.Errorf("ParseCallbackPath(%q) = %q, %q, %v; want %q, %q, %v", tc.path, id, tok, ok, tc.id, tc.tok, tc.ok)
		}
	}
}
