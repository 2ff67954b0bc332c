package main

import "syscall"

// sysProcAttr makes a child die with the runner, so that an interrupted run
// leaves no service behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
