// Package admin is stkgate-admin: it manages the API clients kept in
// Postgres and their tokens, and has the operator's commands on the
// payments: rebuild the read model from the STK stream (rebuild.go), show a
// payment's whole history (history.go), read and replay dead letters
// (dlq.go), and show the consumers' lag (lag.go). A new token is written
// once, to stdout, and never again: only its SHA-256 digest is stored.
//
// Data (a new token, a listing) goes to stdout, messages to stderr, so that
//
//	TOKEN=$(stkgate-admin client create shop)
//
// captures the token alone.
package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api"
	"github.com/stkgate/stkgate/api/projector"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/envconf"
)

// Exit codes.
const (
	ExitOK    = 0 // done
	ExitError = 1 // refused or failed: unknown client, name taken, database error
	ExitUsage = 2 // the command line is wrong
)

// DefaultGrace is how long a rotated client's older tokens keep working.
const DefaultGrace = 24 * time.Hour

// maxGrace bounds -grace: a rotation is meant to end.
const maxGrace = 90 * 24 * time.Hour

// Usage is the help text.
const Usage = `usage: stkgate-admin COMMAND

Manages the API clients kept in the database (DATABASE_URL) and their
tokens, and looks after the payments (NATS_URL, and DATABASE_URL for the
read model). A new token is printed once, to stdout; it cannot be shown
again.

  client create NAME            create a client; prints its first token
  client list                   list the clients
  client disable NAME           its tokens stop authenticating
  client enable NAME            its tokens authenticate again
  client allow-callback-url NAME on|off
                                let the client give a callback_url per request
                                (docs/WEBHOOKS.md); the first "on" prints the
                                signing secret of those deliveries, once
  token rotate NAME [-grace D]  print a new token; the client's older tokens
                                expire after the grace D (default 24h; 0: now)
  token revoke NAME             revoke every token of the client, now
  token revoke -id ID           revoke one token by its id (token list shows it)
  token revoke -stdin           revoke the one token read from stdin (a token
                                on the command line stays in shell history)
  token list NAME               list the client's tokens by id
` + webhookUsage + `

  rebuild-read-model [--dry-run] [--keep-old=false] [--drop-unstreamed]
                                rebuild stk_pushes from the STK stream with the
                                projector's own code and swap it in, safe while
                                the projector runs; --dry-run only reports what
                                would change; the old table is kept as
                                stk_pushes_old_<time> unless --keep-old=false;
                                the live rows of payments whose stk.requested
                                the stream lacks (older than its 90 days) are
                                kept, their events left applied on top, unless
                                --drop-unstreamed
  history TRACKING_ID [--json]  a payment's events, pushes, kept callbacks,
                                dead letters and attempt record in time order
                                (phones masked, callback tokens redacted)
  dlq list [--json]             the dead letters in STK_DLQ
  dlq show SEQ                  one dead letter, headers and body
  dlq replay SEQ --yes          publish its original message, as STK holds it
                                at the recorded sequence (refused unless it is
                                the dead letter's), again to its subject with
                                its Nats-Msg-Id: every consumer of that subject
                                gets it again (a duplicate within STK's window
                                is dropped)
  lag [--fail-above N] [--stuck-after D] [--json]
                                every durable consumer of the STK streams:
                                pending, ack pending, redelivered, waiting,
                                last delivered, ack floor, stuck (work waiting
                                and no ack for D, default 5m); exit 1 when one
                                has more than N pending

A change reaches running api instances within their token cache time (%s).
Names are 1 to 64 letters, digits, '.', '_' or '-'. Exit status: 0 done,
1 refused or failed (lag: a consumer over --fail-above), 2 usage error.
`

// Main is the command: it reads DATABASE_URL and NATS_URL (from getenv) as
// the services read them, opens what the command needs (the database,
// brought up to date first; NATS) and runs args (without the program name).
// stdin may be nil: nothing to read.
func Main(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	if code, done := help(args, stdout, stderr); done {
		return code
	}
	needDB, needNATS := needs(args)
	e := envconf.New(getenv)
	var d Deps
	if needDB {
		d.DatabaseURL = e.Required("DATABASE_URL", projector.DatabaseURLForm)
	}
	var natsURL string
	if needNATS {
		natsURL = e.NATSURL("NATS_URL", "")
	}
	if err := e.Err(); err != nil {
		fmt.Fprintln(stderr, "stkgate-admin:", err)
		return ExitUsage
	}
	if needDB {
		db, err := store.OpenMigrated(ctx, d.DatabaseURL)
		if err != nil {
			fmt.Fprintln(stderr, "stkgate-admin:", err)
			return ExitError
		}
		defer db.Close()
		d.DB = db
	}
	if needNATS {
		// No retrying for ever, as a service does: an operator is waiting.
		nc, err := events.Connect(natsURL, "stkgate-admin", slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
			nats.RetryOnFailedConnect(false), nats.MaxReconnects(5))
		if err != nil {
			fmt.Fprintln(stderr, "stkgate-admin:", err)
			return ExitError
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			fmt.Fprintln(stderr, "stkgate-admin: jetstream:", err)
			return ExitError
		}
		d.JS = js
	}
	d.Getenv = getenv
	return RunWith(ctx, args, stdin, stdout, stderr, d)
}

// needs says what a command line needs: the database, NATS.
func needs(args []string) (db, nats bool) {
	switch args[0] {
	case "client", "token":
		return true, false
	case "webhook":
		return true, len(args) > 1 && args[1] == "redeliver"
	case "rebuild-read-model":
		return true, true
	case "history", "dlq", "lag":
		return false, true
	}
	return false, false
}

// Deps are what the commands work on; a command refuses to run without
// what it needs.
type Deps struct {
	DB *sqlx.DB // migrated
	// DatabaseURL opens more connections (rebuild-read-model's own).
	DatabaseURL string
	JS          jetstream.JetStream
	// Getenv reads the webhook commands' settings (WEBHOOK_SECRET_KEY,
	// WEBHOOK_DEV_MODE); nil is os.Getenv.
	Getenv func(string) string
}

// help answers an empty command line and a request for help.
func help(args []string, stdout, stderr io.Writer) (code int, done bool) {
	if len(args) == 0 {
		fmt.Fprintf(stderr, Usage, api.DefaultTokenCacheTTL)
		return ExitUsage, true
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprintf(stdout, Usage, api.DefaultTokenCacheTTL)
		return ExitOK, true
	}
	return 0, false
}

// Run runs args (without the program name) against db, which must be
// migrated. stdin may be nil: nothing to read.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, db *sqlx.DB) int {
	return RunWith(ctx, args, stdin, stdout, stderr, Deps{DB: db})
}

// RunWith runs args (without the program name) against d.
func RunWith(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, d Deps) int {
	if code, done := help(args, stdout, stderr); done {
		return code
	}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	if d.Getenv == nil {
		d.Getenv = os.Getenv
	}
	c := &cmd{db: d.DB, dbURL: d.DatabaseURL, js: d.JS, stdin: stdin, stdout: stdout, stderr: stderr, getenv: d.Getenv}
	if d.DB != nil {
		c.s = store.New(d.DB)
	}
	verb := args[0]
	if len(args) > 1 && (verb == "client" || verb == "token" || verb == "dlq" || verb == "webhook") {
		verb += " " + args[1]
	}
	rest := args[min(len(args), len(strings.Fields(verb))):]
	needDB, needNATS := needs(args)
	var err error
	switch {
	case needDB && d.DB == nil:
		err = fmt.Errorf("%s needs the database (DATABASE_URL)", verb)
	case needNATS && d.JS == nil && verb != "webhook redeliver": // it checks its arguments first
		err = fmt.Errorf("%s needs NATS (NATS_URL)", verb)
	}
	if err != nil {
		fmt.Fprintln(stderr, "stkgate-admin:", err)
		return ExitError
	}
	switch verb {
	case "client create":
		err = c.createClient(ctx, rest)
	case "client list":
		err = c.listClients(ctx, rest)
	case "client disable":
		err = c.setDisabled(ctx, rest, true)
	case "client enable":
		err = c.setDisabled(ctx, rest, false)
	case "client allow-callback-url":
		err = c.allowCallbackURL(ctx, rest)
	case "token rotate":
		err = c.rotate(ctx, rest)
	case "token revoke":
		err = c.revoke(ctx, rest)
	case "token list":
		err = c.listTokens(ctx, rest)
	case "rebuild-read-model":
		err = c.rebuildReadModel(ctx, rest)
	case "history":
		err = c.history(ctx, rest)
	case "dlq list":
		err = c.dlqList(ctx, rest)
	case "dlq show":
		err = c.dlqShow(ctx, rest)
	case "dlq replay":
		err = c.dlqReplay(ctx, rest)
	case "lag":
		err = c.lag(ctx, rest)
	case webhookVerb(verb):
		err = c.webhook(ctx, args[1], rest)
	default:
		err = usageErrorf("unknown command %q", strings.Join(args[:min(len(args), 2)], " "))
	}
	var uerr *usageError
	var ferr *failError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ferr):
		// Done, but what it found is a failure (lag over --fail-above).
		return ExitError
	case errors.As(err, &uerr):
		fmt.Fprintf(stderr, "stkgate-admin: %s\n\n", uerr.msg)
		fmt.Fprintf(stderr, Usage, api.DefaultTokenCacheTTL)
		return ExitUsage
	}
	fmt.Fprintln(stderr, "stkgate-admin:", err)
	return ExitError
}

// failError is a command that ran and printed its answer, an answer that
// is a failure: exit 1 with nothing more said.
type failError struct{}

func (*failError) Error() string { return "failed" }

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

type cmd struct {
	s              *store.Store // nil without a database
	db             *sqlx.DB
	dbURL          string
	js             jetstream.JetStream
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string // the webhook commands' settings
}

// positional parses fs's flags, which may come before or after the
// positional arguments, and returns those.
func positional(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageErrorf("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parse is positional, checking that there are want arguments (names).
func parse(fs *flag.FlagSet, args []string, want int, names string) ([]string, error) {
	pos, err := positional(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != want {
		if want == 0 {
			return nil, usageErrorf("%s takes no arguments", fs.Name())
		}
		return nil, usageErrorf("%s takes %s", fs.Name(), names)
	}
	return pos, nil
}

// name parses the one argument NAME and checks it.
func name(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parse(fs, args, 1, "NAME")
	if err != nil {
		return "", err
	}
	if err := checkName(pos[0]); err != nil {
		return "", err
	}
	return pos[0], nil
}

// checkName refuses what is not a client name, without repeating it: it
// may be a token given by mistake.
func checkName(n string) error {
	if store.WellFormedToken(n) {
		return usageErrorf("NAME is a token, not a client name (token revoke -id takes a token's id; token revoke -stdin reads a whole token)")
	}
	if !api.ValidClientName(n) {
		return usageErrorf("NAME is not a client name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	return nil
}

// named says "no client NAME" for ErrClientNotFound.
func named(n string, err error) error {
	if errors.Is(err, store.ErrClientNotFound) {
		return fmt.Errorf("no client %s", n)
	}
	return err
}

// stamp is t in UTC to the second, "-" for none.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}
