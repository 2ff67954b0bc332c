package ports

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestFree(t *testing.T) {
	high := ephemeralLow()
	for range 20 {
		p, err := Free()
		if err != nil {
			t.Fatal(err)
		}
		if p < low || p >= high {
			t.Fatalf("port %d outside [%d, %d)", p, low, high)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d given as free: %v", p, err)
		}
		ln.Close()
	}
}

func TestFreeAddr(t *testing.T) {
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("FreeAddr() = %q, want 127.0.0.1:<port> (%v)", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < low || p >= ephemeralLow() {
		t.Fatalf("FreeAddr() = %q: port outside [%d, %d)", addr, low, ephemeralLow())
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s given as free: %v", addr, err)
	}
	ln.Close()
}

func TestParseLow(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"32768\t60999\n", 32768, true},
		{"1024 65535", 1024, true},
		{"", 0, false},
		{"x y", 0, false},
		{"32768", 0, false},
	}
	for _, tt := range tests {
		got, err := parseLow(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseLow(%q) = %d, %v", tt.in, got, err)
		}
	}
}

// picks makes pick return ports in turn, then fail the test.
func picks(t *testing.T, ports ...int) {
	t.Helper()
	old := pick
	t.Cleanup(func() { pick = old })
	pick = func(int, int) int {
		if len(ports) == 0 {
			t.Fatal("pick called more often than the test expects")
		}
		p := ports[0]
		ports = ports[1:]
		return p
	}
}

// unreserved is a port Free may return: nobody has reserved it and
// nothing listens on it.
func unreserved(t *testing.T) int {
	t.Helper()
	for p := low + 7919; p < ephemeralLow(); p++ {
		r, err := net.Listen("unix", fmt.Sprintf("@stkgate-port-%d", p))
		if err != nil {
			continue
		}
		r.Close()
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	t.Fatal("no unreserved port")
	return 0
}

// A port Free has returned is not returned again, though nothing listens
// on it: the caller it went to may be about to.
func TestFreeDoesNotReturnAPortTwice(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reservations are Linux's abstract sockets")
	}
	a, err := Free()
	if err != nil {
		t.Fatal(err)
	}
	b := unreserved(t)
	picks(t, a, b)
	got, err := Free()
	if err != nil {
		t.Fatal(err)
	}
	if got != b {
		t.Fatalf("Free() = %d, want %d: %d was given out before", got, b, a)
	}
}

// childEnv makes the test binary a process that takes a port with Free,
// prints it, and holds it until its stdin closes.
const childEnv = "PORTS_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		p, err := Free()
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(p)
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A port another process was given is passed over while that process
// lives, and free again once it has ended.
func TestFreePassesOverAnotherProcesssPort(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reservations are Linux's abstract sockets")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child: %q", line)
	}
	other := unreserved(t)
	picks(t, theirs, other)
	got, err := Free()
	if err != nil {
		t.Fatal(err)
	}
	if got == theirs {
		t.Fatalf("Free() = %d, the port the other process holds", got)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	picks(t, theirs)
	if got, err := Free(); err != nil || got != theirs {
		t.Fatalf("after the other process ended Free() = %d, %v; want %d", got, err, theirs)
	}
}
