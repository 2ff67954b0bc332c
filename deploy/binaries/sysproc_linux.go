package binaries

import "syscall"

// SysProcAttr makes a child die with the runner, so that an interrupted run
// leaves no service behind.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
