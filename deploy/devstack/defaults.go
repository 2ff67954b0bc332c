package devstack

// The dev stack's settings where the environment gives none: its defaults, the
// tokens it takes, and the secrets it makes and keeps under the data directory.

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/stkgate/stkgate/api"
	"github.com/stkgate/stkgate/dispatcher"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/redact"
	"github.com/stkgate/stkgate/events/kit/webhook"
)

// devDefaults are the dev stack's settings where the environment sets none.
// Its listeners are on loopback: a laptop on a shared network serves no one
// else (API_ADDR=:8080 opens the api to the network on purpose).
func devDefaults() map[string]string {
	return map[string]string{
		"API_ADDR":      "127.0.0.1:8080",
		"CALLBACK_ADDR": "127.0.0.1:8081",
		"API_TOKENS":    "dev:" + DefaultToken,
		// Off in development, so the README's curl line can be tried
		// again and again on one phone; set it to try the limit.
		"PHONE_MAX_PROMPTS": "0",
		// Webhook receivers on the developer's machine (http, loopback);
		// private networks stay refused.
		"WEBHOOK_DEV_MODE": "true",
	}
}

// devTokens reads API_TOKENS. With darajaBase empty (the dev stack's own
// simulator) or on loopback (a simulator there), any token goes, dev-token
// among them; with any other Daraja, where a push prompts a real phone, the
// tokens follow the api's rule outside the dev stack (api.MinTokenLen), and
// the well-known dev-token is refused by name.
func devTokens(list, darajaBase string) ([]api.ClientToken, error) {
	tokens, err := api.ParseTokens(list)
	if err != nil {
		return nil, err
	}
	if darajaBase == "" || dispatcher.IsLoopbackURL(darajaBase) {
		return tokens, nil
	}
	for _, t := range tokens {
		if t.Token == DefaultToken {
			return nil, fmt.Errorf("API_TOKENS: %s is refused when DARAJA_BASE_URL is not a simulator on loopback (it is %s): set API_TOKENS to name:token pairs of at least %d bytes each",
				DefaultToken, redact.URLs(darajaBase), api.MinTokenLen)
		}
	}
	return tokens, api.CheckTokenLengths(tokens)
}

func intSetting(getenv func(string) string, key string, def int) (int, error) {
	v := getenv(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("%s: %q is not a port number", key, v)
	}
	return n, nil
}

// loopback turns a listen address (":8081", "0.0.0.0:8081") into one a local
// client can dial.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// webhookKeyFile holds the dev stack's WEBHOOK_SECRET_KEY under the data
// directory when the environment sets none; stkgate-admin webhook add needs
// the same key (WEBHOOK_SECRET_KEY=$(cat .data/webhook-secret-key)).
const webhookKeyFile = "webhook-secret-key"

// setWebhookKey sets WEBHOOK_SECRET_KEY where the environment does not:
// read from the data directory, or made and written there (mode 0600), so
// that a restart still opens the secrets sealed before it.
func (d *devSetup) setWebhookKey() error {
	if d.lookup("WEBHOOK_SECRET_KEY") != "" {
		return nil
	}
	path := filepath.Join(d.dataDir, webhookKeyFile)
	if b, err := os.ReadFile(path); err == nil {
		key := strings.TrimSpace(string(b))
		if _, err := webhook.NewSealer(key); err != nil {
			return fmt.Errorf("%s: %w (delete it to have a new one made; endpoints added with it need new secrets)", path, err)
		}
		d.env["WEBHOOK_SECRET_KEY"] = key
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read the dev webhook key: %w", err)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return fmt.Errorf("dev webhook key: %w", err)
	}
	key := base64.StdEncoding.EncodeToString(k)
	if err := os.MkdirAll(d.dataDir, 0o755); err != nil {
		return fmt.Errorf("dev webhook key: %w", err)
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return fmt.Errorf("write the dev webhook key: %w", err)
	}
	d.env["WEBHOOK_SECRET_KEY"] = key
	return nil
}

// callbackSecretFile holds the dev stack's CALLBACK_SECRET under the data
// directory when the environment sets none.
const callbackSecretFile = "callback-secret"

// devCallbackSecret reads the dev stack's callback secret from the data
// directory, or makes one and writes it there (mode 0600): a restart must
// keep verifying the callbacks of pushes sent before it.
func devCallbackSecret(dataDir string) (string, error) {
	path := filepath.Join(dataDir, callbackSecretFile)
	if b, err := os.ReadFile(path); err == nil {
		secret := strings.TrimSpace(string(b))
		if _, err := events.ParseCallbackSecrets(secret); err != nil {
			return "", fmt.Errorf("%s: %w (delete it to have a new one made)", path, err)
		}
		return secret, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read the dev callback secret: %w", err)
	}
	secret, err := events.GenerateCallbackSecret()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", fmt.Errorf("dev callback secret: %w", err)
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write the dev callback secret: %w", err)
	}
	return secret, nil
}
