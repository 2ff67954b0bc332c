package admin

import (
	"context"
	"io"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events/kit/webhook"
)

// SetRebuildHook sets the function rebuild-read-model calls at each phase
// ("copied", "locked") for the test's duration.
func SetRebuildHook(h func(phase string)) (restore func()) {
	old := rebuildHook
	rebuildHook = h
	return func() { rebuildHook = old }
}

// RunEnv is Run with the webhook commands' settings from env, and NATS at
// js when not nil (webhook redeliver).
func RunEnv(ctx context.Context, args []string, env map[string]string, stdin io.Reader, stdout, stderr io.Writer, db *sqlx.DB, js ...jetstream.JetStream) int {
	d := Deps{DB: db, Getenv: func(k string) string { return env[k] }}
	if len(js) > 0 {
		d.JS = js[0]
	}
	return RunWith(ctx, args, stdin, stdout, stderr, d)
}

// SetLookup replaces the resolver of webhook URLs until the returned
// restore is called.
func SetLookup(l webhook.Lookup) (restore func()) {
	old := lookup
	lookup = l
	return func() { lookup = old }
}

// SetSwapAttempts sets how often rebuild-read-model tries to lock the live
// table for the test's duration.
func SetSwapAttempts(n int) (restore func()) {
	old := swapAttempts
	swapAttempts = n
	return func() { swapAttempts = old }
}
