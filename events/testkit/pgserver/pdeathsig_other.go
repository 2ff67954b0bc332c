//go:build !linux

package pgserver

import "os/exec"

// dieWithParent is a no-op where the kernel offers no parent-death signal:
// there a server whose parent was killed outlives it until Stop or reboot.
func dieWithParent(*exec.Cmd) {}
