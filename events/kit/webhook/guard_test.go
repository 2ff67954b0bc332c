package webhook_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/stkgate/stkgate/events/kit/webhook"
)

func TestCheckAddr(t *testing.T) {
	tests := []struct {
		addr      string
		prod, dev bool // allowed in production, in development mode
	}{
		{"203.0.113.10", true, true},
		{"8.8.8.8", true, true},
		{"2001:4860:4860::8888", true, true},
		{"127.0.0.1", false, true},
		{"127.1.2.3", false, true},
		{"::1", false, true},
		{"::ffff:127.0.0.1", false, true},
		{"0.0.0.0", false, false},
		{"::", false, false},
		{"10.1.2.3", false, false},
		{"172.16.0.1", false, false},
		{"172.31.255.255", false, false},
		{"172.32.0.1", true, true},
		{"192.168.1.1", false, false},
		{"::ffff:192.168.1.1", false, false},
		{"::ffff:10.0.0.1", false, false},
		{"100.64.0.1", false, false},
		{"100.100.100.200", false, false}, // a cloud's metadata, in CGNAT
		{"169.254.169.254", false, false},
		{"::ffff:169.254.169.254", false, false},
		{"169.254.1.1", false, false},
		{"fd00:ec2::254", false, false},
		{"fc00::1", false, false},
		{"fe80::1", false, false},
		{"fe80::1%eth0", false, false},
		{"224.0.0.1", false, false},
		{"239.255.255.250", false, false},
		{"255.255.255.255", false, false},
		{"ff02::1", false, false},
		{"64:ff9b::a9fe:a9fe", false, false}, // NAT64 of 169.254.169.254
		{"64:ff9b::808:808", true, true},     // NAT64 of 8.8.8.8
		{"2002:7f00:1::", false, true},       // 6to4 of 127.0.0.1
		{"2002:c0a8:101::", false, false},    // 6to4 of 192.168.1.1
		{"192.0.0.192", false, false},
		{"198.18.0.1", false, false},
		{"::7f00:1", false, false},                             // IPv4-compatible 127.0.0.1
		{"::a9fe:a9fe", false, false},                          // IPv4-compatible 169.254.169.254
		{"::808:808", false, false},                            // IPv4-compatible, deprecated whatever inside
		{"::ffff:0:a9fe:a9fe", false, false},                   // SIIT of 169.254.169.254
		{"::ffff:0:808:808", false, false},                     // SIIT, whatever inside
		{"64:ff9b:1::a9fe:a9fe", false, false},                 // local-use NAT64
		{"64:ff9b:1:ffff::808:808", false, false},              // local-use NAT64, whatever inside
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", false, false}, // Teredo
		{"2001::1", false, false},                              // Teredo
		{"2001:1::1", true, true},                              // next to Teredo, not in it
	}
	for _, tc := range tests {
		a := netip.MustParseAddr(tc.addr)
		for _, mode := range []struct {
			p    webhook.Policy
			want bool
		}{{webhook.Policy{}, tc.prod}, {webhook.Policy{Dev: true}, tc.dev}} {
			err := mode.p.CheckAddr(a)
			if (err == nil) != mode.want {
				t.Errorf("%+v CheckAddr(%s) = %v, want allowed %v", mode.p, tc.addr, err, mode.want)
			}
			if err != nil && !errors.Is(err, webhook.ErrRefused) {
				t.Errorf("CheckAddr(%s) = %v, not ErrRefused", tc.addr, err)
			}
		}
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url       string
		prod, dev bool
	}{
		{"https://shop.example.com/hooks/stk", true, true},
		{"https://shop.example.com:8443/hooks?x=1", true, true},
		{"https://203.0.113.10/hooks", true, true},
		{"https://[2001:db8::1]/hooks", true, true},
		{"http://shop.example.com/hooks", false, true},
		{"http://127.0.0.1:8080/hooks", false, true},
		{"https://127.0.0.1/hooks", false, true},
		{"https://[::1]/hooks", false, true},
		{"https://[::ffff:169.254.169.254]/", false, false},
		{"https://169.254.169.254/latest/meta-data", false, false},
		{"https://[fd00:ec2::254]/", false, false},
		{"https://10.0.0.1/", false, false},
		{"ftp://shop.example.com/", false, false},
		{"file:///etc/passwd", false, false},
		{"gopher://shop.example.com/", false, false},
		{"https://user:pw@shop.example.com/", false, false},
		{"https://shop.example.com/#frag", false, false},
		{"https:shop.example.com", false, false},
		{"//shop.example.com/", false, false},
		{"/hooks", false, false},
		{"https://", false, false},
		{"https://:443/", false, false},
		{"https://shop.example.com:0/", false, false},
		{"https://shop.example.com:99999/", false, false},
		{"https://2130706433/", false, false}, // 127.0.0.1 to some resolvers
		{"https://0x7f.1/", false, false},
		{"https://shop_1.example.com/", false, false},
		{"https://shop.example.com/a b", false, false},
		{"https://shop.example.com/\x00", false, false},
		{"https://shop.example.com/\r\nX: y", false, false},
		{"https://-shop.example.com/", false, false},
		{"", false, false},
	}
	for _, tc := range tests {
		for _, mode := range []struct {
			p    webhook.Policy
			want bool
		}{{webhook.Policy{}, tc.prod}, {webhook.Policy{Dev: true}, tc.dev}} {
			_, err := mode.p.CheckURL(tc.url)
			if (err == nil) != mode.want {
				t.Errorf("%+v CheckURL(%q) = %v, want allowed %v", mode.p, tc.url, err, mode.want)
			}
		}
	}
}

// fakeDNS answers from a table; a name it lacks does not resolve.
func fakeDNS(table map[string][]string) webhook.Lookup {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		as, ok := table[host]
		if !ok {
			return nil, errors.New("no such host")
		}
		out := make([]netip.Addr, len(as))
		for i, a := range as {
			out[i] = netip.MustParseAddr(a)
		}
		return out, nil
	}
}

func TestResolve(t *testing.T) {
	dns := fakeDNS(map[string][]string{
		"shop.example.com":     {"203.0.113.10"},
		"metadata.example.com": {"169.254.169.254"},
		"mixed.example.com":    {"203.0.113.10", "10.0.0.1"},
		"mapped.example.com":   {"::ffff:192.168.0.1"},
		"local.example.com":    {"127.0.0.1"},
	})
	tests := []struct {
		url string
		ok  bool
	}{
		{"https://shop.example.com/hooks", true},
		{"https://metadata.example.com/", false},
		{"https://mixed.example.com/", false}, // one refused address is enough
		{"https://mapped.example.com/", false},
		{"https://local.example.com/", false},
		{"https://nowhere.example.com/", false},
		{"https://203.0.113.10/", true},
	}
	for _, tc := range tests {
		_, err := webhook.Policy{}.Resolve(context.Background(), dns, tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("Resolve(%q) = %v, want ok %v", tc.url, err, tc.ok)
		}
	}
}
