package pgserver

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel send postgres a fast-shutdown signal when the
// thread that started it exits (see start, which keeps that thread alive).
func dieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGINT
}
