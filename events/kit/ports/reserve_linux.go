package ports

import (
	"fmt"
	"net"
	"sync"
)

// held keeps the reservations' sockets open for the process's life.
var (
	heldMu sync.Mutex
	held   []net.Listener
)

// reserve takes port p for this process, machine-wide, until it exits: it
// listens on the abstract Unix socket @stkgate-port-p, which exists only
// while a process holds it open and is gone with the process, however it
// ends (no file is left behind). A port already reserved, by this process
// or another, is refused.
func reserve(p int) error {
	ln, err := net.Listen("unix", fmt.Sprintf("@stkgate-port-%d", p))
	if err != nil {
		return fmt.Errorf("port %d reserved by another caller: %w", p, err)
	}
	heldMu.Lock()
	held = append(held, ln)
	heldMu.Unlock()
	return nil
}
