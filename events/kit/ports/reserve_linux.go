package ports

import (
	"fmt"
	"net"
	"sync"
)

// held keeps the reservations' sockets open for the process's life.
var (
	heldMu sync.Mutex
	held   = map[int]net.Listener{}
)

// reserve takes port p for this process, machine-wide, until it exits or
// calls release: it listens on the abstract Unix socket @stkgate-port-p,
// which exists only while a process holds it open and is gone with the
// process, however it ends (no file is left behind). A port already
// reserved, by this process or another, is refused.
func reserve(p int) (release func(), err error) {
	ln, err := net.Listen("unix", fmt.Sprintf("@stkgate-port-%d", p))
	if err != nil {
		return nil, fmt.Errorf("port %d reserved by another caller: %w", p, err)
	}
	heldMu.Lock()
	held[p] = ln
	heldMu.Unlock()
	return func() {
		heldMu.Lock()
		delete(held, p)
		heldMu.Unlock()
		_ = ln.Close()
	}, nil
}
