package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
)

func newToken(t *testing.T) (string, store.TokenDigest) {
	t.Helper()
	tok, err := store.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok, store.DigestOf(tok)
}

// lookup is the client a token authenticates as, or "" when it does not.
func lookup(t *testing.T, s *store.Store, tok string) string {
	t.Helper()
	m, err := s.LookupToken(context.Background(), store.DigestOf(tok))
	if errors.Is(err, store.ErrTokenNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest != store.DigestOf(tok) {
		t.Errorf("match digest differs")
	}
	return m.Client
}

func TestNewToken(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		tok, _ := newToken(t)
		if !store.WellFormedToken(tok) || len(tok) != store.TokenLen || !strings.HasPrefix(tok, "stk_") {
			t.Fatalf("token %q is not well formed", tok)
		}
		if seen[tok] {
			t.Fatal("the same token twice")
		}
		seen[tok] = true
	}
	tok, _ := newToken(t)
	for _, bad := range []string{"", "stk_", tok[:len(tok)-1], tok + "A", "xtk_" + tok[4:], tok[:10] + "+" + tok[11:], tok[:10] + "=" + tok[11:], strings.ToUpper(tok[:4]) + tok[4:]} {
		if store.WellFormedToken(bad) {
			t.Errorf("WellFormedToken(%q) = true", bad)
		}
	}
	if id := store.TokenID(tok); id != tok[:12] {
		t.Errorf("TokenID = %q", id)
	}
}

func TestClientLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := store.New(pgtest.New(t))

	tok1, d1 := newToken(t)
	if err := s.CreateClient(ctx, "shop", d1, store.TokenID(tok1)); err != nil {
		t.Fatal(err)
	}
	other, dOther := newToken(t)
	if err := s.CreateClient(ctx, "other", dOther, store.TokenID(other)); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, s, tok1); got != "shop" {
		t.Fatalf("new token authenticates as %q", got)
	}
	_, dx := newToken(t)
	if err := s.CreateClient(ctx, "shop", dx, "stk_xxxxxxxx"); !errors.Is(err, store.ErrClientExists) {
		t.Errorf("second create: %v, want ErrClientExists", err)
	}
	if err := s.CreateClient(ctx, "bad name", dx, "stk_xxxxxxxx"); err == nil {
		t.Error("a malformed name was accepted")
	}
	// A digest given twice: the insert of the client is rolled back too.
	if err := s.CreateClient(ctx, "dup", d1, "stk_xxxxxxxx"); !errors.Is(err, store.ErrTokenExists) {
		t.Errorf("duplicate digest: %v, want ErrTokenExists", err)
	}
	if got, err := s.ClientsNamed(ctx, []string{"dup", "shop", "nobody"}); err != nil || len(got) != 1 || got[0] != "shop" {
		t.Errorf("ClientsNamed = %v, %v; want [shop]", got, err)
	}

	// Disabled: no token of the client authenticates; enabled: they do again.
	if changed, err := s.SetClientDisabled(ctx, "shop", true); err != nil || !changed {
		t.Fatalf("disable: %v %v", changed, err)
	}
	if changed, err := s.SetClientDisabled(ctx, "shop", true); err != nil || changed {
		t.Errorf("disable twice: changed=%v %v", changed, err)
	}
	if got := lookup(t, s, tok1); got != "" {
		t.Errorf("a disabled client's token authenticates as %q", got)
	}
	if got := lookup(t, s, other); got != "other" {
		t.Errorf("another client's token: %q", got)
	}
	cs, err := s.Clients(ctx)
	if err != nil || len(cs) != 2 || cs[1].Name != "shop" || cs[1].DisabledAt.IsZero() || cs[1].ActiveTokens != 1 || !cs[0].DisabledAt.IsZero() {
		t.Errorf("Clients = %+v, %v", cs, err)
	}
	if changed, err := s.SetClientDisabled(ctx, "shop", false); err != nil || !changed {
		t.Fatalf("enable: %v %v", changed, err)
	}
	if got := lookup(t, s, tok1); got != "shop" {
		t.Errorf("enabled again: %q", got)
	}
	if _, err := s.SetClientDisabled(ctx, "nobody", true); !errors.Is(err, store.ErrClientNotFound) {
		t.Errorf("disable unknown: %v", err)
	}

	// Rotation with grace: both tokens work, the old one with an expiry.
	tok2, d2 := newToken(t)
	n, err := s.RotateToken(ctx, "shop", d2, store.TokenID(tok2), time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("rotate: %d %v", n, err)
	}
	for _, tok := range []string{tok1, tok2} {
		if got := lookup(t, s, tok); got != "shop" {
			t.Errorf("during the grace, %s authenticates as %q", store.TokenID(tok), got)
		}
	}
	m, err := s.LookupToken(ctx, d1)
	if err != nil || m.ExpiresIn <= 59*time.Minute || m.ExpiresIn > time.Hour {
		t.Errorf("old token expires in %s (%v), want about 1h", m.ExpiresIn, err)
	}
	if m, _ := s.LookupToken(ctx, d2); m.ExpiresIn != 0 {
		t.Errorf("new token expires in %s, want never", m.ExpiresIn)
	}
	// A second rotation without grace: the two older ones stop at once.
	tok3, d3 := newToken(t)
	if n, err := s.RotateToken(ctx, "shop", d3, store.TokenID(tok3), 0); err != nil || n != 2 {
		t.Fatalf("rotate without grace: %d %v", n, err)
	}
	for tok, want := range map[string]string{tok1: "", tok2: "", tok3: "shop", other: "other"} {
		if got := lookup(t, s, tok); got != want {
			t.Errorf("after rotation, %s authenticates as %q, want %q", store.TokenID(tok), got, want)
		}
	}
	if _, err := s.RotateToken(ctx, "nobody", dx, "stk_xxxxxxxx", 0); !errors.Is(err, store.ErrClientNotFound) {
		t.Errorf("rotate unknown: %v", err)
	}

	toks, err := s.Tokens(ctx, "shop")
	if err != nil || len(toks) != 3 || toks[0].ID != store.TokenID(tok3) || !toks[0].Active || toks[2].Active || toks[2].ExpiresAt.IsZero() {
		t.Errorf("Tokens = %+v, %v", toks, err)
	}

	// Revoke one token by its id, then all of a client's.
	tok4, d4 := newToken(t)
	if _, err := s.RotateToken(ctx, "shop", d4, store.TokenID(tok4), time.Hour); err != nil {
		t.Fatal(err)
	}
	rt, err := s.RevokeToken(ctx, store.TokenID(tok3))
	if err != nil || rt.Client != "shop" || rt.RevokedAt.IsZero() {
		t.Fatalf("revoke by id: %+v %v", rt, err)
	}
	if got := lookup(t, s, tok3); got != "" {
		t.Errorf("revoked token, within its grace, authenticates as %q", got)
	}
	if got := lookup(t, s, tok4); got != "shop" {
		t.Errorf("the other token of the client: %q", got)
	}
	if _, err := s.RevokeToken(ctx, "stk_nothing1"); !errors.Is(err, store.ErrTokenNotFound) {
		t.Errorf("revoke unknown id: %v", err)
	}
	if n, err := s.RevokeClientTokens(ctx, "shop"); err != nil || n != 3 {
		t.Errorf("revoke all: %d %v, want 3 (tok1, tok2, tok4)", n, err)
	}
	if got := lookup(t, s, tok4); got != "" {
		t.Errorf("revoked: %q", got)
	}
	if got := lookup(t, s, other); got != "other" {
		t.Errorf("another client's token after a revoke: %q", got)
	}
	if _, err := s.RevokeClientTokens(ctx, "nobody"); !errors.Is(err, store.ErrClientNotFound) {
		t.Errorf("revoke unknown client: %v", err)
	}
	if toks, err := s.Tokens(ctx, "nobody"); !errors.Is(err, store.ErrClientNotFound) {
		t.Errorf("tokens of unknown client: %v %v", toks, err)
	}
}

func TestTokenExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := store.New(pgtest.New(t))
	tok1, d1 := newToken(t)
	if err := s.CreateClient(ctx, "shop", d1, store.TokenID(tok1)); err != nil {
		t.Fatal(err)
	}
	tok2, d2 := newToken(t)
	const grace = 500 * time.Millisecond
	rotated := time.Now()
	if _, err := s.RotateToken(ctx, "shop", d2, store.TokenID(tok2), grace); err != nil {
		t.Fatal(err)
	}
	expiresBy := time.Now().Add(grace) // Postgres's now() is before this
	// A loaded machine may take the whole grace to get here: only a lookup
	// known to be within it must succeed.
	if got := lookup(t, s, tok1); got != "shop" && time.Since(rotated) < grace {
		t.Fatalf("within grace: %q", got)
	}
	time.Sleep(time.Until(expiresBy.Add(50 * time.Millisecond)))
	if got := lookup(t, s, tok1); got != "" {
		t.Errorf("after its grace the old token authenticates as %q", got)
	}
	if got := lookup(t, s, tok2); got != "shop" {
		t.Errorf("new token: %q", got)
	}
}

func TestRevokeAmbiguousTokenID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := store.New(pgtest.New(t))
	tok1, d1 := newToken(t)
	_, d2 := newToken(t)
	if err := s.CreateClient(ctx, "a", d1, "stk_same0000"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateClient(ctx, "b", d2, "stk_same0000"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeToken(ctx, "stk_same0000"); !errors.Is(err, store.ErrTokenAmbiguous) {
		t.Fatalf("revoke: %v, want ErrTokenAmbiguous", err)
	}
	if got := lookup(t, s, tok1); got != "a" {
		t.Errorf("an ambiguous revoke revoked something: %q", got)
	}
}

// ActiveTokenDigests lists the tokens LookupToken finds, newest first.
func TestActiveTokenDigests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := store.New(pgtest.New(t))
	create := func(name string) store.TokenDigest {
		t.Helper()
		tok, d := newToken(t)
		if err := s.CreateClient(ctx, name, d, store.TokenID(tok)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	older := create("older")
	create("disabled")
	if _, err := s.SetClientDisabled(ctx, "disabled", true); err != nil {
		t.Fatal(err)
	}
	create("revoked")
	if _, err := s.RevokeClientTokens(ctx, "revoked"); err != nil {
		t.Fatal(err)
	}
	newer := create("newer")

	got, err := s.ActiveTokenDigests(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != newer || got[1] != older {
		t.Errorf("active digests: %d of them, want newer's and older's", len(got))
	}
	if got, err := s.ActiveTokenDigests(ctx, 1); err != nil || len(got) != 1 || got[0] != newer {
		t.Errorf("at most 1: %d digests, %v; want newer's", len(got), err)
	}
}
