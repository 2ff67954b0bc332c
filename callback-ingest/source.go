package callback

import (
	"net/http"
	"net/netip"
	"strings"
)

// SourcePolicy says who may send callbacks: a second line of defence behind
// the callback token, since Safaricom publishes no official list of its
// addresses.
type SourcePolicy struct {
	// Allow are the networks callbacks may come from
	// (CALLBACK_ALLOW_CIDRS); empty allows every source.
	Allow []netip.Prefix
	// TrustedProxies are the networks of the proxies in front of the
	// service (CALLBACK_TRUSTED_PROXIES): only a peer in them is believed
	// about X-Forwarded-For.
	TrustedProxies []netip.Prefix
}

// Source is the address a request is taken to come from: the TCP peer, or,
// when the peer is a trusted proxy, the right-most address of
// X-Forwarded-For that is not a trusted proxy (each proxy appends the
// address it got the request from, so the addresses left of the first
// untrusted one are whatever the client wrote). When every address is a
// trusted proxy, the left-most one. ok is false when the address cannot be
// read (a malformed X-Forwarded-For entry where the walk stops).
func (p SourcePolicy) Source(r *http.Request) (addr netip.Addr, ok bool) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	addr = peer.Addr().Unmap()
	if !contains(p.TrustedProxies, addr) {
		return addr, true
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return netip.Addr{}, false
		}
		addr = a.Unmap()
		if !contains(p.TrustedProxies, addr) {
			return addr, true
		}
	}
	return addr, true
}

// Allowed reports whether a request may be taken, and from where it is
// taken to come (for the logs).
func (p SourcePolicy) Allowed(r *http.Request) (source string, ok bool) {
	addr, valid := p.Source(r)
	source = sourceForLog(addr, valid)
	if len(p.Allow) == 0 {
		return source, true
	}
	return source, valid && contains(p.Allow, addr)
}

// sourceForLog is a source as Source gave it, for the logs.
func sourceForLog(addr netip.Addr, ok bool) string {
	if !ok {
		return "unreadable"
	}
	return addr.String()
}

func contains(nets []netip.Prefix, a netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}
