package admin_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/stkgate/stkgate/api/admin"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events/kit/webhook"
)

func newSealKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

func runEnv(t *testing.T, db *sqlx.DB, env map[string]string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := admin.RunEnv(context.Background(), args, env, strings.NewReader(""), &out, &errOut, db)
	return result{code, out.String(), errOut.String()}
}

// secretOf is the secret an add or rotate-secret printed: stdout is that
// alone.
func secretOf(t *testing.T, r result) webhook.Secret {
	t.Helper()
	if r.code != admin.ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	s, err := webhook.ParseSecret(strings.TrimSuffix(r.stdout, "\n"))
	if err != nil || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("stdout is not one secret: %v", err)
	}
	if strings.Contains(r.stderr, s.String()) {
		t.Error("stderr repeats the secret")
	}
	return s
}

// dns answers from a table for the test's duration.
func dns(t *testing.T, table map[string]string) {
	t.Helper()
	restore := admin.SetLookup(func(_ context.Context, host string) ([]netip.Addr, error) {
		a, ok := table[host]
		if !ok {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{netip.MustParseAddr(a)}, nil
	})
	t.Cleanup(restore)
}

func TestWebhookAddRotateRemove(t *testing.T) {
	dns(t, map[string]string{"shop.example.com": "203.0.113.10"})
	db := pgtest.New(t)
	ctx := context.Background()
	key := newSealKey(t)
	env := map[string]string{admin.EnvWebhookSecretKey: key}
	sealer, _ := webhook.NewSealer(key)
	token(t, run(t, db, "client", "create", "shop"))

	sec := secretOf(t, runEnv(t, db, env, "webhook", "add", "shop", "https://shop.example.com/hooks", "-events", "completed,requested"))
	eps, err := store.New(db).WebhookEndpoints(ctx, "shop")
	if err != nil || len(eps) != 1 {
		t.Fatalf("endpoints = %d, %v", len(eps), err)
	}
	ep := eps[0]
	if strings.Join(ep.Events, ",") != "stk.completed,stk.requested" || ep.URL != "https://shop.example.com/hooks" {
		t.Errorf("endpoint = %+v", ep)
	}
	if bytes.Contains(ep.Secret, []byte(sec.String()[len("whsec_"):])) {
		t.Error("the secret is stored in clear")
	}
	if got, err := sealer.Open(ep.ID, ep.Secret); err != nil || got.String() != sec.String() {
		t.Errorf("stored secret does not open to the one printed: %v", err)
	}
	list := runEnv(t, db, env, "webhook", "list")
	if list.code != 0 || !strings.Contains(list.stdout, ep.ID) || strings.Contains(list.stdout, "whsec_") {
		t.Errorf("list = %+v", list)
	}

	sec2 := secretOf(t, runEnv(t, db, env, "webhook", "rotate-secret", ep.ID, "-grace", "1h"))
	ep, _ = store.New(db).WebhookEndpoint(ctx, ep.ID)
	signing := ep.Signing(time.Now())
	if len(signing) != 2 {
		t.Fatalf("during the grace %d secrets sign, want 2", len(signing))
	}
	for i, want := range []webhook.Secret{sec2, sec} {
		if got, err := sealer.Open(ep.ID, signing[i]); err != nil || got.String() != want.String() {
			t.Errorf("signing secret %d is not the expected one: %v", i, err)
		}
	}

	if r := runEnv(t, db, env, "webhook", "disable", ep.ID); r.code != 0 {
		t.Errorf("disable: %+v", r)
	}
	if got, _ := store.New(db).WebhookEndpointsFor(ctx, "shop", "stk.completed"); len(got) != 0 {
		t.Error("disabled endpoint still delivered to")
	}
	if r := runEnv(t, db, env, "webhook", "enable", ep.ID); r.code != 0 {
		t.Errorf("enable: %+v", r)
	}
	if r := runEnv(t, db, env, "webhook", "remove", ep.ID); r.code != 0 {
		t.Errorf("remove: %+v", r)
	}
	if r := runEnv(t, db, env, "webhook", "remove", ep.ID); r.code != admin.ExitError {
		t.Errorf("remove twice: %+v", r)
	}
	if r := runEnv(t, db, env, "webhook", "remove", "not-an-id"); r.code != admin.ExitUsage {
		t.Errorf("remove not-an-id: %+v", r)
	}
}

func TestWebhookAddRefuses(t *testing.T) {
	dns(t, map[string]string{
		"shop.example.com":     "203.0.113.10",
		"metadata.example.com": "169.254.169.254",
		"inside.example.com":   "10.1.2.3",
		"local.example.com":    "127.0.0.1",
	})
	db := pgtest.New(t)
	key := newSealKey(t)
	env := map[string]string{admin.EnvWebhookSecretKey: key}
	dev := map[string]string{admin.EnvWebhookSecretKey: key, admin.EnvWebhookDevMode: "true"}
	token(t, run(t, db, "client", "create", "shop"))
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
	}{
		{"http", env, []string{"shop", "http://shop.example.com/"}, admin.ExitError},
		{"private literal", env, []string{"shop", "https://10.0.0.1/"}, admin.ExitError},
		{"name of a metadata address", env, []string{"shop", "https://metadata.example.com/"}, admin.ExitError},
		{"name of a private address", env, []string{"shop", "https://inside.example.com/"}, admin.ExitError},
		{"name of loopback", env, []string{"shop", "https://local.example.com/"}, admin.ExitError},
		{"private even in dev mode", dev, []string{"shop", "http://inside.example.com/"}, admin.ExitError},
		{"unresolvable", env, []string{"shop", "https://nowhere.example.com/"}, admin.ExitError},
		{"unknown client", env, []string{"nobody", "https://shop.example.com/"}, admin.ExitError},
		{"no secret key", map[string]string{}, []string{"shop", "https://shop.example.com/"}, admin.ExitError},
		{"bad events", env, []string{"shop", "https://shop.example.com/", "-events", "paid"}, admin.ExitUsage},
		{"missing URL", env, []string{"shop"}, admin.ExitUsage},
	}
	for _, tc := range tests {
		r := runEnv(t, db, tc.env, append([]string{"webhook", "add"}, tc.args...)...)
		if r.code != tc.code || r.stdout != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d and nothing on stdout", tc.name, r.code, r.stdout, r.stderr, tc.code)
		}
	}
	if eps, _ := store.New(db).WebhookEndpoints(context.Background(), ""); len(eps) != 0 {
		t.Errorf("%d endpoints added by refused commands", len(eps))
	}
	// Allowed: loopback in development mode; an API_TOKENS client.
	secretOf(t, runEnv(t, db, dev, "webhook", "add", "shop", "http://local.example.com:8080/"))
	secretOf(t, runEnv(t, db, env, "webhook", "add", "dev", "https://shop.example.com/", "-env-client"))
}

func TestWebhookRedeliverRefuses(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	env := map[string]string{admin.EnvWebhookSecretKey: newSealKey(t)}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"abc"}, admin.ExitUsage},
		{[]string{"0"}, admin.ExitUsage},
		{[]string{}, admin.ExitUsage},
		{[]string{"999"}, admin.ExitError}, // no such delivery
	} {
		r := runEnv(t, db, env, append([]string{"webhook", "redeliver"}, tc.args...)...)
		if r.code != tc.code {
			t.Errorf("redeliver %v: exit %d (%s), want %d", tc.args, r.code, r.stderr, tc.code)
		}
	}
}

// TestWebhookReseal: after WEBHOOK_SECRET_KEY becomes "new,old", webhook
// reseal seals every stored secret (the current and the previous one)
// under the new key, unchanged: the new key alone then opens them all,
// and the merchants' secrets are the ones they hold.
func TestWebhookReseal(t *testing.T) {
	dns(t, map[string]string{"shop.example.com": "203.0.113.10"})
	db := pgtest.New(t)
	ctx := context.Background()
	oldKey, newKey := newSealKey(t), newSealKey(t)
	old := map[string]string{admin.EnvWebhookSecretKey: oldKey}
	token(t, run(t, db, "client", "create", "shop"))
	first := secretOf(t, runEnv(t, db, old, "webhook", "add", "shop", "https://shop.example.com/hooks"))
	eps, _ := store.New(db).WebhookEndpoints(ctx, "shop")
	id := eps[0].ID
	second := secretOf(t, runEnv(t, db, old, "webhook", "rotate-secret", id, "-grace", "1h"))

	both := map[string]string{admin.EnvWebhookSecretKey: newKey + "," + oldKey}
	r := runEnv(t, db, both, "webhook", "reseal")
	if r.code != admin.ExitOK || !strings.Contains(r.stderr, "1 endpoint") || r.stdout != "" {
		t.Fatalf("reseal: %+v", r)
	}
	onlyNew, _ := webhook.NewSealer(newKey)
	ep, _ := store.New(db).WebhookEndpoint(ctx, id)
	for i, want := range []webhook.Secret{second, first} {
		got, err := onlyNew.Open(id, ep.Signing(time.Now())[i])
		if err != nil || got.String() != want.String() {
			t.Errorf("secret %d under the new key alone: %v (changed: %v)", i, err, err == nil)
		}
	}
	if r := runEnv(t, db, both, "webhook", "reseal"); r.code != admin.ExitOK || !strings.Contains(r.stderr, "0 endpoint") {
		t.Errorf("reseal again: %+v", r)
	}
	if r := runEnv(t, db, old, "webhook", "reseal"); r.code != admin.ExitError {
		t.Errorf("reseal with a key list lacking the key they are sealed with: %+v", r)
	}
}
