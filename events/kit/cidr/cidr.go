// Package cidr reads and shows the lists of networks the services take from
// the environment (CALLBACK_ALLOW_CIDRS, CALLBACK_TRUSTED_PROXIES,
// API_TRUSTED_PROXIES).
package cidr

import (
	"fmt"
	"net/netip"
	"strings"
)

// Parse reads a comma-separated list of CIDRs (196.201.214.0/24,
// 2001:db8::/32) or single addresses (taken as /32 or /128). Empty gives
// nil. A prefix with host bits set is refused: it is usually a typo for
// another network.
func Parse(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			a, err := netip.ParseAddr(part)
			if err != nil {
				return nil, fmt.Errorf("%q is neither a CIDR nor an address", part)
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 196.201.214.0/24", part)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("%q has host bits set; did you mean %s?", part, p.Masked())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p)
	}
	return out, nil
}

// String lists prefixes for a logged configuration.
func String(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
