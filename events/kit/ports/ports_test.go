package ports

import (
	"net"
	"strconv"
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
