package admin

// The client and token commands: client create, list, disable and enable;
// token rotate, revoke and list.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/stkgate/stkgate/api"
	"github.com/stkgate/stkgate/api/store"
)

// newToken makes a token; only its digest and id are stored.
func newToken() (token string, digest store.TokenDigest, id string, err error) {
	token, err = store.NewToken()
	if err != nil {
		return "", digest, "", err
	}
	return token, store.DigestOf(token), store.TokenID(token), nil
}

func (c *cmd) createClient(ctx context.Context, args []string) error {
	n, err := name(flag.NewFlagSet("client create", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	token, digest, id, err := newToken()
	if err != nil {
		return err
	}
	err = c.s.CreateClient(ctx, n, digest, id)
	if errors.Is(err, store.ErrClientExists) {
		return fmt.Errorf("client %s already exists (token rotate %s gives it a new token)", n, n)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, token)
	fmt.Fprintf(c.stderr, "client %s created with token %s…; keep the token now: it is not shown again\n", n, id)
	return nil
}

func (c *cmd) listClients(ctx context.Context, args []string) error {
	if _, err := parse(flag.NewFlagSet("client list", flag.ContinueOnError), args, 0, ""); err != nil {
		return err
	}
	cs, err := c.s.Clients(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSTATE\tACTIVE TOKENS\tCREATED")
	for _, cl := range cs {
		state := "enabled"
		if !cl.DisabledAt.IsZero() {
			state = "disabled since " + stamp(cl.DisabledAt)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", cl.Name, state, cl.ActiveTokens, stamp(cl.CreatedAt))
	}
	return w.Flush()
}

func (c *cmd) setDisabled(ctx context.Context, args []string, disabled bool) error {
	verb := map[bool]string{true: "disable", false: "enable"}[disabled]
	n, err := name(flag.NewFlagSet("client "+verb, flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	changed, err := c.s.SetClientDisabled(ctx, n, disabled)
	if err != nil {
		return named(n, err)
	}
	switch {
	case !changed:
		fmt.Fprintf(c.stderr, "client %s was already %sd\n", n, verb)
	case disabled:
		fmt.Fprintf(c.stderr, "client %s disabled: its tokens stop authenticating within %s\n", n, api.DefaultTokenCacheTTL)
	default:
		fmt.Fprintf(c.stderr, "client %s enabled: its active tokens authenticate again within %s\n", n, api.DefaultTokenCacheTTL)
	}
	return nil
}

func (c *cmd) rotate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("token rotate", flag.ContinueOnError)
	grace := fs.Duration("grace", DefaultGrace, "how long the older tokens keep working")
	n, err := name(fs, args)
	if err != nil {
		return err
	}
	if *grace < 0 || *grace > maxGrace {
		return usageErrorf("-grace %s is not from 0 to %s", *grace, maxGrace)
	}
	token, digest, id, err := newToken()
	if err != nil {
		return err
	}
	old, err := c.s.RotateToken(ctx, n, digest, id, *grace)
	if err != nil {
		return named(n, err)
	}
	fmt.Fprintln(c.stdout, token)
	fmt.Fprintf(c.stderr, "client %s: new token %s…; keep it now: it is not shown again\n", n, id)
	if old > 0 {
		fmt.Fprintf(c.stderr, "%d older token(s) stop authenticating in %s\n", old, *grace)
	}
	return nil
}

func (c *cmd) revoke(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("token revoke", flag.ContinueOnError)
	id := fs.String("id", "", "the id of the one token to revoke")
	fromStdin := fs.Bool("stdin", false, "read the one token to revoke from stdin")
	pos, err := positional(fs, args)
	switch {
	case err != nil:
		return err
	case *id != "" && !*fromStdin && len(pos) == 0:
		return c.revokeOne(ctx, *id)
	case *fromStdin && *id == "" && len(pos) == 0:
		tok, err := c.readToken()
		if err != nil {
			return err
		}
		return c.revokeOne(ctx, store.TokenID(tok))
	case *id != "" || *fromStdin || len(pos) != 1:
		return usageErrorf("token revoke takes NAME, -id ID or -stdin")
	}
	n := pos[0]
	if err := checkName(n); err != nil {
		return err
	}
	count, err := c.s.RevokeClientTokens(ctx, n)
	if errors.Is(err, store.ErrClientNotFound) {
		if strings.HasPrefix(n, store.TokenPrefix) {
			return fmt.Errorf("no client %s (to revoke a token by its id: token revoke -id %s)", n, n)
		}
		return fmt.Errorf("no client %s", n)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "client %s: %d token(s) revoked; they stop authenticating within %s (token rotate %s makes a new one)\n",
		n, count, api.DefaultTokenCacheTTL, n)
	return nil
}

// readToken reads one token from stdin (a line, white space around it
// ignored), never repeating what it read in an error.
func (c *cmd) readToken() (string, error) {
	b, err := io.ReadAll(io.LimitReader(c.stdin, 1024))
	if err != nil {
		return "", fmt.Errorf("read the token from stdin: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if !store.WellFormedToken(tok) {
		return "", usageErrorf("stdin holds no token (%s and %d more characters)", store.TokenPrefix, store.TokenLen-len(store.TokenPrefix))
	}
	return tok, nil
}

// revokeOne revokes the token whose id is id. A whole token is refused, and
// not repeated: on the command line it is kept in the shell's history and
// shown to every user of the host in the process list.
func (c *cmd) revokeOne(ctx context.Context, id string) error {
	if len(id) > store.TokenIDLen && strings.HasPrefix(id, store.TokenPrefix) {
		return usageErrorf("-id takes a token's id, not the token (%s and 8 more characters, as token list shows); "+
			"to revoke by the whole token, give it on stdin: token revoke -stdin", store.TokenPrefix)
	}
	if !strings.HasPrefix(id, store.TokenPrefix) || len(id) != store.TokenIDLen {
		return usageErrorf("-id is not a token id (%s and 8 more characters, as token list shows)", store.TokenPrefix)
	}
	tok, err := c.s.RevokeToken(ctx, id)
	switch {
	case errors.Is(err, store.ErrTokenNotFound):
		return fmt.Errorf("no token %s", id)
	case errors.Is(err, store.ErrTokenAmbiguous):
		return fmt.Errorf("several tokens have the id %s; nothing revoked: revoke them by client name instead", id)
	case err != nil:
		return err
	}
	fmt.Fprintf(c.stderr, "token %s of client %s revoked; it stops authenticating within %s\n", id, tok.Client, api.DefaultTokenCacheTTL)
	return nil
}

func (c *cmd) listTokens(ctx context.Context, args []string) error {
	n, err := name(flag.NewFlagSet("token list", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	toks, err := c.s.Tokens(ctx, n)
	if err != nil {
		return named(n, err)
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSTATE\tCREATED\tEXPIRES\tREVOKED")
	for _, t := range toks {
		state := "active"
		switch {
		case !t.RevokedAt.IsZero():
			state = "revoked"
		case !t.Active:
			state = "expired"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.ID, state, stamp(t.CreatedAt), stamp(t.ExpiresAt), stamp(t.RevokedAt))
	}
	return w.Flush()
}
