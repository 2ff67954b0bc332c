// Command stkgate-admin manages the API clients kept in Postgres and their
// tokens (create, list, disable and enable clients; rotate, revoke and list
// tokens), and has the operator's commands on the payments (rebuild the
// read model from the STK stream, and more). It reads DATABASE_URL (and
// brings the schema up to date first) and NATS_URL, each when the command
// needs it. Run it without arguments for its usage; see package admin and
// docs/OPERATIONS.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/stkgate/stkgate/api/admin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := admin.Main(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
