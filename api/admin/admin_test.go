package admin_test

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/stkgate/stkgate/api/admin"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, db *sqlx.DB, args ...string) result {
	t.Helper()
	return runStdin(t, db, "", args...)
}

// runStdin runs args with stdin holding in.
func runStdin(t *testing.T, db *sqlx.DB, in string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := admin.Run(context.Background(), args, strings.NewReader(in), &out, &errOut, db)
	return result{code, out.String(), errOut.String()}
}

// token is the token a create or rotate printed: stdout is that alone.
func token(t *testing.T, r result) string {
	t.Helper()
	if r.code != admin.ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	tok := strings.TrimSuffix(r.stdout, "\n")
	if !store.WellFormedToken(tok) || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("stdout is not one token: %q", r.stdout)
	}
	if strings.Contains(r.stderr, tok) {
		t.Errorf("stderr repeats the token: %s", r.stderr)
	}
	return tok
}

// authenticates is the client tok authenticates as, "" for none.
func authenticates(t *testing.T, db *sqlx.DB, tok string) string {
	t.Helper()
	m, err := store.New(db).LookupToken(context.Background(), store.DigestOf(tok))
	if errors.Is(err, store.ErrTokenNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return m.Client
}

func TestClientCommands(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	shop := token(t, run(t, db, "client", "create", "shop"))
	mall := token(t, run(t, db, "client", "create", "mall"))
	if shop == mall {
		t.Fatal("one token twice")
	}
	for tok, want := range map[string]string{shop: "shop", mall: "mall"} {
		if got := authenticates(t, db, tok); got != want {
			t.Errorf("token authenticates as %q, want %q", got, want)
		}
	}
	var stored int
	if err := db.Get(&stored, "SELECT count(*) FROM api_tokens WHERE encode(digest, 'escape') LIKE '%' || $1 || '%' OR prefix = $2", shop[4:20], shop); err != nil || stored != 0 {
		t.Errorf("the token is stored in clear (%d rows, %v)", stored, err)
	}

	r := run(t, db, "client", "create", "shop")
	if r.code != admin.ExitError || !strings.Contains(r.stderr, "client shop already exists") || r.stdout != "" {
		t.Errorf("create twice: %+v", r)
	}

	r = run(t, db, "client", "disable", "shop")
	if r.code != admin.ExitOK || !strings.Contains(r.stderr, "client shop disabled") {
		t.Errorf("disable: %+v", r)
	}
	if got := authenticates(t, db, shop); got != "" {
		t.Errorf("disabled client's token authenticates as %q", got)
	}
	if r := run(t, db, "client", "disable", "shop"); r.code != admin.ExitOK || !strings.Contains(r.stderr, "already disabled") {
		t.Errorf("disable twice: %+v", r)
	}
	r = run(t, db, "client", "list")
	if r.code != admin.ExitOK || !regexp.MustCompile(`(?m)^mall +enabled +1 `).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^shop +disabled since \S+ \S+ +1 `).MatchString(r.stdout) {
		t.Errorf("list:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, shop) || strings.Contains(r.stdout, mall) {
		t.Errorf("list shows a token:\n%s", r.stdout)
	}
	if r := run(t, db, "client", "enable", "shop"); r.code != admin.ExitOK {
		t.Errorf("enable: %+v", r)
	}
	if got := authenticates(t, db, shop); got != "shop" {
		t.Errorf("enabled client's token authenticates as %q", got)
	}
	if r := run(t, db, "client", "disable", "nobody"); r.code != admin.ExitError || !strings.Contains(r.stderr, "no client nobody") {
		t.Errorf("disable unknown: %+v", r)
	}
}

func TestTokenCommands(t *testing.T) {
	db := pgtest.New(t)
	first := token(t, run(t, db, "client", "create", "shop"))
	other := token(t, run(t, db, "client", "create", "mall"))

	// Rotate with the flag after the name, as the usage shows it.
	r := run(t, db, "token", "rotate", "shop", "-grace", "1h")
	second := token(t, r)
	if !strings.Contains(r.stderr, "1 older token(s) stop authenticating in 1h0m0s") {
		t.Errorf("rotate: %s", r.stderr)
	}
	for _, tok := range []string{first, second} {
		if got := authenticates(t, db, tok); got != "shop" {
			t.Errorf("during the grace: %q", got)
		}
	}
	// And before it, with no grace: both older ones stop at once.
	third := token(t, run(t, db, "token", "rotate", "-grace=0s", "shop"))
	for tok, want := range map[string]string{first: "", second: "", third: "shop", other: "mall"} {
		if got := authenticates(t, db, tok); got != want {
			t.Errorf("after a rotation without grace, %s… authenticates as %q, want %q", store.TokenID(tok), got, want)
		}
	}

	r = run(t, db, "token", "list", "shop")
	if r.code != admin.ExitOK {
		t.Fatalf("token list: %+v", r)
	}
	for id, state := range map[string]string{store.TokenID(first): "expired", store.TokenID(second): "expired", store.TokenID(third): "active"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(id) + ` +` + state + ` `).MatchString(r.stdout) {
			t.Errorf("token list lacks %s %s:\n%s", id, state, r.stdout)
		}
	}
	if strings.Contains(r.stdout, third) {
		t.Errorf("token list shows a whole token:\n%s", r.stdout)
	}

	// Revoke one token by its id, during a grace.
	fourth := token(t, run(t, db, "token", "rotate", "shop"))
	r = run(t, db, "token", "revoke", "-id", store.TokenID(third))
	if r.code != admin.ExitOK || !strings.Contains(r.stderr, "token "+store.TokenID(third)+" of client shop revoked") {
		t.Errorf("revoke -id: %+v", r)
	}
	if authenticates(t, db, third) != "" || authenticates(t, db, fourth) != "shop" {
		t.Error("revoke -id revoked the wrong token")
	}
	// Every token of a client.
	r = run(t, db, "token", "revoke", "shop")
	if r.code != admin.ExitOK || !strings.Contains(r.stderr, "client shop: 3 token(s) revoked") {
		t.Errorf("revoke NAME: %+v", r)
	}
	if authenticates(t, db, fourth) != "" || authenticates(t, db, other) != "mall" {
		t.Error("revoke NAME: wrong tokens revoked")
	}
	if r := run(t, db, "token", "revoke", "-id", "stk_00000000"); r.code != admin.ExitError || !strings.Contains(r.stderr, "no token stk_00000000") {
		t.Errorf("revoke unknown id: %+v", r)
	}
	// A whole token is read from stdin, never taken on the command line.
	last := token(t, run(t, db, "token", "rotate", "mall"))
	r = runStdin(t, db, last+"\n", "token", "revoke", "-stdin")
	if r.code != admin.ExitOK || !strings.Contains(r.stderr, "token "+store.TokenID(last)+" of client mall revoked") || strings.Contains(r.stderr, last) {
		t.Errorf("revoke -stdin: %+v", r)
	}
	if authenticates(t, db, last) != "" {
		t.Error("revoke -stdin did not revoke the token")
	}
	if r := run(t, db, "token", "rotate", "nobody"); r.code != admin.ExitError || r.stdout != "" {
		t.Errorf("rotate unknown client: %+v", r)
	}
}

func TestUsage(t *testing.T) {
	db := pgtest.New(t)
	tok := token(t, run(t, db, "client", "create", "shop"))
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"nothing", nil, admin.ExitUsage, "usage: stkgate-admin"},
		{"unknown command", []string{"client", "delete", "shop"}, admin.ExitUsage, `unknown command "client delete"`},
		{"one word", []string{"client"}, admin.ExitUsage, `unknown command "client"`},
		{"create without name", []string{"client", "create"}, admin.ExitUsage, "client create takes NAME"},
		{"create two names", []string{"client", "create", "a", "b"}, admin.ExitUsage, "client create takes NAME"},
		{"bad name", []string{"client", "create", "no spaces"}, admin.ExitUsage, "NAME is not a client name"},
		{"list with argument", []string{"client", "list", "x"}, admin.ExitUsage, "client list takes no arguments"},
		{"unknown flag", []string{"token", "rotate", "shop", "-force"}, admin.ExitUsage, "flag provided but not defined: -force"},
		{"bad grace", []string{"token", "rotate", "shop", "-grace", "soon"}, admin.ExitUsage, "-grace"},
		{"negative grace", []string{"token", "rotate", "shop", "-grace", "-1h"}, admin.ExitUsage, "-grace -1h0m0s is not from 0"},
		{"revoke both", []string{"token", "revoke", "shop", "-id", "stk_00000000"}, admin.ExitUsage, "token revoke takes NAME, -id ID or -stdin"},
		{"revoke neither", []string{"token", "revoke"}, admin.ExitUsage, "token revoke takes NAME, -id ID or -stdin"},
		{"revoke id and stdin", []string{"token", "revoke", "-stdin", "-id", "stk_00000000"}, admin.ExitUsage, "token revoke takes NAME, -id ID or -stdin"},
		{"revoke bad id", []string{"token", "revoke", "-id", "abc"}, admin.ExitUsage, "-id is not a token id"},
		{"revoke a whole token as the id", []string{"token", "revoke", "-id", tok}, admin.ExitUsage, "-id takes a token's id, not the token"},
		{"revoke an id with more", []string{"token", "revoke", "-id", store.TokenID(tok) + "x"}, admin.ExitUsage, "-id takes a token's id, not the token"},
		{"revoke stdin without a token", []string{"token", "revoke", "-stdin"}, admin.ExitUsage, "stdin holds no token"},
		{"a token as a name", []string{"token", "revoke", tok}, admin.ExitUsage, "NAME is a token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, db, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant exit %d and %q", r.code, r.stdout, r.stderr, tc.code, tc.want)
			}
			if strings.Contains(r.stderr, tok) {
				t.Errorf("stderr repeats a token: %s", r.stderr)
			}
		})
	}
	if got := authenticates(t, db, tok); got != "shop" {
		t.Errorf("a refused command changed the token: %q", got)
	}
	r := run(t, db, "help")
	if r.code != admin.ExitOK || !strings.Contains(r.stdout, "token rotate NAME [-grace D]") {
		t.Errorf("help: %+v", r)
	}
}

// Main connects to DATABASE_URL and migrates before it runs the command.
func TestMain_DatabaseURL(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	code := admin.Main(context.Background(), []string{"client", "list"}, func(string) string { return "" }, nil, &out, &errOut)
	if code != admin.ExitUsage || !strings.Contains(errOut.String(), "DATABASE_URL: required") {
		t.Errorf("without DATABASE_URL: exit %d, %s", code, errOut.String())
	}

	url := pgtest.NewURL(t)
	db, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Start from an empty database: Main must create the tables.
	db.MustExec("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
	getenv := func(k string) string {
		if k == "DATABASE_URL" {
			return url
		}
		return ""
	}
	out.Reset()
	errOut.Reset()
	if code := admin.Main(context.Background(), []string{"client", "create", "shop"}, getenv, nil, &out, &errOut); code != admin.ExitOK {
		t.Fatalf("create: exit %d, %s", code, errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	if got := authenticates(t, db, tok); got != "shop" {
		t.Errorf("token authenticates as %q", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errOut.Reset()
	bad := func(k string) string {
		return "postgres://postgres:hunter2@127.0.0.1:1/x?sslmode=disable&connect_timeout=1"
	}
	if code := admin.Main(ctx, []string{"client", "list"}, bad, nil, &out, &errOut); code != admin.ExitError || strings.Contains(errOut.String(), "hunter2") {
		t.Errorf("unreachable database: exit %d, %s", code, errOut.String())
	}
}

// The NATS commands read NATS_URL as the services do, and never show its
// password.
func TestMain_NATSURL(t *testing.T) {
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		want []string
	}{
		{"history without NATS_URL", []string{"history", "x"}, nil, admin.ExitUsage, []string{"NATS_URL: required"}},
		{"lag with a bad scheme", []string{"lag"}, map[string]string{"NATS_URL": "http://u:hunter2@h:4222"}, admin.ExitUsage, []string{`NATS_URL: scheme "http"`}},
		{"rebuild without either", []string{"rebuild-read-model"}, nil, admin.ExitUsage, []string{"DATABASE_URL: required", "NATS_URL: required"}},
		{"dlq with NATS unreachable", []string{"dlq", "list"}, map[string]string{"NATS_URL": "nats://u:hunter2@127.0.0.1:1"}, admin.ExitError, []string{"connect nats"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := admin.Main(context.Background(), tc.args, env(tc.env), nil, &out, &errOut)
			for _, w := range tc.want {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr lacks %q", w)
				}
			}
			if code != tc.code || strings.Contains(errOut.String(), "hunter2") {
				t.Errorf("exit %d (want %d), stderr:\n%s", code, tc.code, errOut.String())
			}
		})
	}
}
