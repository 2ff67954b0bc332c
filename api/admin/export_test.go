package admin

import (
	"context"
	"io"

	"github.com/jmoiron/sqlx"

	"github.com/stkgate/stkgate/events/kit/webhook"
)

// RunEnv is Run with the webhook commands' settings from env.
func RunEnv(ctx context.Context, args []string, env map[string]string, stdin io.Reader, stdout, stderr io.Writer, db *sqlx.DB) int {
	return run(ctx, args, stdin, stdout, stderr, db, func(k string) string { return env[k] })
}

// SetLookup replaces the resolver of webhook URLs until the returned
// restore is called.
func SetLookup(l webhook.Lookup) (restore func()) {
	old := lookup
	lookup = l
	return func() { lookup = old }
}
