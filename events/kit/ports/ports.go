// Package ports finds a free loopback port for a process that must keep one
// port across restarts (the chaos test's services, an embedded Postgres
// started again after a stop).
//
// A port found by listening on port 0 comes from the kernel's ephemeral
// range, the range every other listener on port 0 and every outgoing
// connection draws from: while the process is down, a test running beside
// it may be given the same port, and the restart fails. Free picks below
// that range instead, where the kernel hands out nothing by itself.
//
// Below it, two processes that each call Free could still be given the
// same port while neither listens on it yet (a chaos test's service is
// down between a kill and its restart, and a dev stack test beside it took
// its port: stop 25's CI). So a port Free returns is reserved for the rest
// of the calling process's life, machine-wide (reserve: on Linux an
// abstract socket named after the port, let go by the kernel when the
// process ends), and Free passes over a port another process reserved.
package ports

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// The range Free picks from, when the kernel's ephemeral range cannot be
// read or leaves too little room below it: Linux's default range starts at
// 32768, and few services listen between 20000 and 32767.
const (
	low         = 20000
	defaultHigh = 32768
	// tries bounds the ports tried before Free gives up.
	tries = 100
)

// rangeFile holds the kernel's ephemeral range on Linux.
const rangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// Free returns a loopback port below the kernel's ephemeral range that
// nothing listens on now.
func Free() (int, error) {
	high := ephemeralLow()
	var last error
	for range tries {
		p := pick(low, high)
		release, err := reserve(p)
		if err != nil {
			last = err
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			release() // something else listens there: not ours to hold
			last = err
			continue
		}
		if err := ln.Close(); err != nil {
			return 0, fmt.Errorf("free port: %w", err)
		}
		return p, nil
	}
	return 0, fmt.Errorf("free port: none free below %d after %d tries: %w", high, tries, last)
}

// FreeAddr is a loopback address ("127.0.0.1:port") on a port Free returns.
func FreeAddr() (string, error) {
	p, err := Free()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// pick is a port in [lo, hi); tests make it predictable.
var pick = func(lo, hi int) int { return lo + rand.IntN(hi-lo) }

// ephemeralLow is the first port of the kernel's ephemeral range, or
// defaultHigh when it cannot be read or leaves no room above low.
func ephemeralLow() int {
	b, err := os.ReadFile(rangeFile)
	if err != nil {
		return defaultHigh
	}
	n, err := parseLow(string(b))
	if err != nil || n <= low+1000 {
		return defaultHigh
	}
	return n
}

// parseLow reads the first number of "32768\t60999\n".
func parseLow(s string) (int, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, errors.New("not two numbers")
	}
	return strconv.Atoi(f[0])
}
