package admin

import (
	"context"
	"errors"
)

var errNotYet = errors.New("not built yet")

func (c *cmd) history(ctx context.Context, args []string) error   { return errNotYet }
func (c *cmd) dlqList(ctx context.Context, args []string) error   { return errNotYet }
func (c *cmd) dlqShow(ctx context.Context, args []string) error   { return errNotYet }
func (c *cmd) dlqReplay(ctx context.Context, args []string) error { return errNotYet }
func (c *cmd) lag(ctx context.Context, args []string) error       { return errNotYet }
