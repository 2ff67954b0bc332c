// Package servertest helps the services' tests of their HTTP servers: an
// address to listen on, and the clients that abuse a server, for the tests
// of their limits: one that sends its request a byte at a time
// (slowloris), and a body that never ends.
package servertest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/events/kit/ports"
)

// FreeAddr is a loopback address nothing listens on, on a port ports.Free
// reserves: one the kernel gave out and closed could be taken meanwhile by
// a server of another test (an embedded JetStream's, port -1).
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := ports.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// SlowRequest dials addr, sends first at once, then trickle one byte every
// interval, and reads until the server closes the connection. It returns
// what the server sent and how long after the start of the dial it hung up. It fails t
// if the server still holds the connection after giveUp.
func SlowRequest(t testing.TB, addr, first, trickle string, every, giveUp time.Duration) (string, time.Duration) {
	t.Helper()
	// The clock starts before the dial: the server may accept, and start
	// its own clock, before this goroutine runs again after the connect
	// (on a loaded machine, tens of milliseconds before). Started after the
	// dial, a cut-off at the server's timeout could look early.
	start := time.Now()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, first); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < len(trickle); i++ {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			if _, err := conn.Write([]byte{trickle[i]}); err != nil {
				return // cut off
			}
		}
	}()
	if err := conn.SetReadDeadline(start.Add(giveUp)); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	_, err = io.Copy(&got, bufio.NewReader(conn))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server still held the connection after %s; it sent %q", giveUp, got.String())
	}
	// EOF (nil from io.Copy) or a reset: either way the server hung up.
	return got.String(), time.Since(start)
}

// Endless is a request body that never ends: spaces, forever.
type Endless struct{}

func (Endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

// SlowClient is one way a client can hold a connection: what it sends at
// once, then what it trickles a byte at a time.
type SlowClient struct {
	Name    string
	First   string
	Trickle string
	// Answered is how the server's answer starts before it hangs up.
	Answered string
	// OrSilence: the server may also hang up without a word. Go's server
	// answers a request line or header cut off mid-line 400, but closes
	// silently when its timeout meets the read between two lines, as on a
	// loaded machine, where the trickle lags.
	OrSilence bool
	// After is the timeout that should cut it off: it is not cut sooner.
	After time.Duration
}

// CheckCutOff plays each client against the server at addr and fails t
// unless the server hangs up on it after its timeout (After) and within
// cutOffWithin, having answered as expected.
func CheckCutOff(t *testing.T, addr string, clients []SlowClient, cutOffWithin time.Duration) {
	t.Helper()
	for _, c := range clients {
		t.Run(c.Name, func(t *testing.T) {
			got, elapsed := SlowRequest(t, addr, c.First, c.Trickle, 100*time.Millisecond, cutOffWithin+3*time.Second)
			if elapsed > cutOffWithin {
				t.Fatalf("the connection was held %s (over %s); answer %q", elapsed, cutOffWithin, got)
			}
			if elapsed < c.After*9/10 {
				t.Errorf("cut off after %s, before its timeout %s", elapsed, c.After)
			}
			if !strings.HasPrefix(got, c.Answered) && (!c.OrSilence || got != "") {
				t.Errorf("answer %q, want %q…", got, c.Answered)
			}
		})
	}
}
