package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// ErrRefused marks a webhook URL or address the gateway will not call: a
// merchant's URL must not turn the gateway into a way into its own
// networks (server-side request forgery).
var ErrRefused = errors.New("webhook address refused")

// MaxURLLength bounds an endpoint's URL.
const MaxURLLength = 2048

// Policy says which URLs and addresses may be called.
type Policy struct {
	// Dev (development mode only) also allows http:// and loopback
	// addresses: a receiver on the developer's own machine. Every other
	// refused network stays refused.
	Dev bool
}

// refused are the networks no webhook may reach, whatever the mode.
var refused = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"}, // 169.254.169.254: cloud metadata
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"}, // 192.0.0.192: a cloud's metadata
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // and 255.255.255.255, broadcast
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fc00::/7"), "unique local"}, // fd00:ec2::254: cloud metadata
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
	{netip.MustParsePrefix("100::/64"), "discard"},
	// After ::/128 and ::1/128, whose names are kept (and ::1 is loopback,
	// allowed in development mode): the rest of ::/96 is the deprecated
	// IPv4-compatible form, which some stacks still route to the IPv4
	// address inside.
	{netip.MustParsePrefix("::/96"), "IPv4-compatible (deprecated)"},
	{netip.MustParsePrefix("::ffff:0:0:0/96"), "IPv4-translated (SIIT)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64"},
	{netip.MustParsePrefix("2001::/32"), "Teredo"},
}

// Prefixes that carry an IPv4 address inside an IPv6 one; the IPv4
// address is checked too (a NAT64 gateway or a 6to4 relay would reach it).
// The forms refused wholly (SIIT, local-use NAT64, Teredo) are checked
// inside too, so that the error names the IPv4 network reached.
var (
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour  = netip.MustParsePrefix("2002::/16")
	siit       = netip.MustParsePrefix("::ffff:0:0:0/96")
	localNAT64 = netip.MustParsePrefix("64:ff9b:1::/48")
	teredo     = netip.MustParsePrefix("2001::/32")
)

// refusal is CheckAddr's error: ErrRefused, and which network (what, a
// fixed name: the text recorded, without the address).
type refusal struct{ msg, what string }

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return ErrRefused }

// CheckAddr reports whether a may be called: nil, or an error wrapping
// ErrRefused that says which network it is in.
func (p Policy) CheckAddr(a netip.Addr) error {
	if !a.IsValid() {
		return &refusal{msg: ErrRefused.Error() + ": no address", what: "no address"}
	}
	a = a.WithZone("").Unmap()
	if a.Is6() {
		var inner []netip.Addr
		b := a.As16()
		switch {
		case nat64.Contains(a), siit.Contains(a):
			inner = append(inner, netip.AddrFrom4([4]byte(b[12:])))
		case localNAT64.Contains(a):
			// RFC 6052 for a /48 prefix: bits 48-63 and 72-87 (bits 64-71
			// are zero).
			inner = append(inner, netip.AddrFrom4([4]byte{b[6], b[7], b[9], b[10]}))
		case sixToFour.Contains(a):
			inner = append(inner, netip.AddrFrom4([4]byte(b[2:6])))
		case teredo.Contains(a):
			// The Teredo server, and the client's public address
			// (inverted).
			inner = append(inner, netip.AddrFrom4([4]byte(b[4:8])),
				netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}))
		}
		for _, in := range inner {
			if err := p.CheckAddr(in); err != nil {
				return fmt.Errorf("%w (inside %s)", err, a)
			}
		}
	}
	for _, r := range refused {
		if r.p.Contains(a) {
			if p.Dev && r.what == "loopback" {
				return nil
			}
			return &refusal{msg: fmt.Sprintf("%s: %s is %s", ErrRefused, a, r.what), what: r.what}
		}
	}
	return nil
}

// CheckURL checks an endpoint URL's form: absolute, https (http too in
// development mode), a host, no user information (a password in a URL ends
// up in listings and logs), no fragment, at most MaxURLLength. A host that
// is an address literal is checked by CheckAddr; a name is checked when it
// is resolved (Resolve at registration, the Client at every connection).
func (p Policy) CheckURL(raw string) (*url.URL, error) {
	if len(raw) > MaxURLLength {
		return nil, fmt.Errorf("%w: URL longer than %d characters", ErrRefused, MaxURLLength)
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, fmt.Errorf("%w: URL holds spaces or control characters", ErrRefused)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: not a URL", ErrRefused)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && p.Dev:
	case u.Scheme == "http":
		return nil, fmt.Errorf("%w: http:// (https only, outside development mode)", ErrRefused)
	default:
		return nil, fmt.Errorf("%w: scheme %q (https only)", ErrRefused, u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: no host", ErrRefused)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: user information in the URL", ErrRefused)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, fmt.Errorf("%w: a fragment in the URL", ErrRefused)
	}
	if port := u.Port(); port != "" {
		if n, err := parsePort(port); err != nil || n == 0 {
			return nil, fmt.Errorf("%w: port %q", ErrRefused, port)
		}
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		if err := p.CheckAddr(a); err != nil {
			return nil, err
		}
		return u, nil
	}
	if !validHostname(host) {
		return nil, fmt.Errorf("%w: host %q is not a DNS name", ErrRefused, host)
	}
	return u, nil
}

func parsePort(s string) (int, error) {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' || n > 65535 {
			return 0, errors.New("not a port")
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, errors.New("not a port")
	}
	return n, nil
}

// validHostname: letters, digits, '-' and '.', labels of 1 to 63, and not
// a number in disguise: some resolvers read 2130706433 or 0x7f.1 as
// 127.0.0.1, so a name whose labels are all numbers (decimal, octal or
// hex) or whose last label is digits is refused.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	numeric := 0
	for _, label := range labels {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
				return false
			}
		}
		if numberLike(label) {
			numeric++
		}
	}
	return numeric < len(labels) && !allDigits(labels[len(labels)-1])
}

func allDigits(s string) bool {
	return strings.Trim(s, "0123456789") == ""
}

func numberLike(label string) bool {
	l := strings.ToLower(label)
	if hex, ok := strings.CutPrefix(l, "0x"); ok {
		return strings.Trim(hex, "0123456789abcdef") == ""
	}
	return allDigits(l)
}

// Lookup resolves a host name to its addresses.
type Lookup func(ctx context.Context, host string) ([]netip.Addr, error)

// SystemLookup resolves with Go's resolver.
func SystemLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// Resolve checks a URL at registration: its form (CheckURL), and every
// address its host resolves to now (CheckAddr). It cannot promise what the
// name resolves to later; the Client checks again at every connection.
func (p Policy) Resolve(ctx context.Context, lookup Lookup, raw string) (*url.URL, error) {
	u, err := p.CheckURL(raw)
	if err != nil {
		return nil, err
	}
	host := u.Hostname()
	if _, err := netip.ParseAddr(host); err == nil {
		return u, nil
	}
	if lookup == nil {
		lookup = SystemLookup
	}
	addrs, err := lookup(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: no address", host)
	}
	for _, a := range addrs {
		if err := p.CheckAddr(a); err != nil {
			return nil, fmt.Errorf("%s resolves to a refused address: %w", host, err)
		}
	}
	return u, nil
}

// control is the net.Dialer's Control: the last check, on the very address
// a socket is about to connect to, after every resolution (so a DNS answer
// that changed since registration, or between two lookups, cannot slip
// through).
func (p Policy) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot read address %q", ErrRefused, address)
	}
	return p.CheckAddr(ap.Addr())
}
