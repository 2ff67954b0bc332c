//go:build !linux

package binaries

import "syscall"

// SysProcAttr is nil where a child cannot be tied to its parent's death.
func SysProcAttr() *syscall.SysProcAttr { return nil }
