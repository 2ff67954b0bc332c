package admin_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/api/admin"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events/kit/webhook"
)

// TestClientAllowCallbackURL: the first opt-in prints the client's
// callback_url signing secret, once; later ones do not; off refuses new
// ones; an unknown client or a bad switch is refused.
func TestClientAllowCallbackURL(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	key := newSealKey(t)
	env := map[string]string{admin.EnvWebhookSecretKey: key}
	sealer, _ := webhook.NewSealer(key)
	token(t, run(t, db, "client", "create", "shop"))
	s := store.New(db)

	sec := secretOf(t, runEnv(t, db, env, "client", "allow-callback-url", "shop", "on"))
	eps, err := s.WebhookEndpointsFor(ctx, "shop", "stk.completed")
	if err != nil || len(eps) != 1 || eps[0].Kind != store.KindCallbackURL {
		t.Fatalf("endpoints = %+v, %v", eps, err)
	}
	if got, err := sealer.Open(eps[0].ID, eps[0].Secret); err != nil || got.String() != sec.String() {
		t.Errorf("the stored secret does not open to the one printed: %v", err)
	}
	if on, _ := s.CallbackURLAllowed(ctx, "shop"); !on {
		t.Error("not allowed after on")
	}
	for _, c := range []struct {
		args     []string
		code     int
		stdout   bool
		allowed  bool
		inStderr string
	}{
		{[]string{"shop", "on"}, admin.ExitOK, false, true, "already"},
		{[]string{"shop", "off"}, admin.ExitOK, false, false, "refused"},
		{[]string{"shop", "on"}, admin.ExitOK, false, true, eps[0].ID},
		{[]string{"nobody", "on"}, admin.ExitError, false, true, "nobody"},
		{[]string{"shop", "yes"}, admin.ExitUsage, false, true, "on or off"},
		{[]string{"shop"}, admin.ExitUsage, false, true, ""},
	} {
		r := runEnv(t, db, env, append([]string{"client", "allow-callback-url"}, c.args...)...)
		if r.code != c.code || (r.stdout != "") != c.stdout || !strings.Contains(r.stderr, c.inStderr) {
			t.Errorf("%v: %+v", c.args, r)
		}
		if on, _ := s.CallbackURLAllowed(ctx, "shop"); on != c.allowed {
			t.Errorf("%v: allowed %v, want %v", c.args, on, c.allowed)
		}
	}
	// Its secret rotates as any endpoint's.
	secretOf(t, runEnv(t, db, env, "webhook", "rotate-secret", eps[0].ID, "-grace", "0"))
}
