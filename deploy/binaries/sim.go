package binaries

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// StartSim starts the fake Daraja (the daraja-sim binary at path) with
// its callback delay and args, and reads its address line: url is Daraja's,
// control the control port's (deploy/cmd/daraja-sim).
func StartSim(ctx context.Context, path string, delay time.Duration, log io.Writer, args ...string) (url, control string, stop func(), err error) {
	cmd := exec.Command(path, append([]string{"-callback-delay", delay.String()}, args...)...)
	cmd.Env = []string{"LOG_FORMAT=json"}
	cmd.Stderr = log
	cmd.SysProcAttr = SysProcAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", "", nil, fmt.Errorf("daraja-sim: %w", err)
	}
	stop = func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	line := make(chan string, 1)
	go func() {
		b := make([]byte, 512)
		n, _ := stdout.Read(b)
		line <- string(b[:n])
		_, _ = io.Copy(log, stdout)
	}()
	select {
	case l := <-line:
		for _, f := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(f, "url="); ok {
				url = v
			}
			if v, ok := strings.CutPrefix(f, "control="); ok {
				control = v
			}
		}
		if url == "" || control == "" {
			stop()
			return "", "", nil, fmt.Errorf("daraja-sim said %q", l)
		}
		return url, control, stop, nil
	case <-time.After(30 * time.Second):
		stop()
		return "", "", nil, errors.New("daraja-sim did not start in 30s")
	case <-ctx.Done():
		stop()
		return "", "", nil, ctx.Err()
	}
}
