package webhook_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/events/kit/webhook"
)

// FuzzCheckURL: whatever a merchant sends, an accepted URL is https (http
// only in development mode), has a host and no user information, and a
// host that is an address is an allowed one.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://shop.example.com/hooks",
		"http://127.0.0.1:8080/",
		"https://[::ffff:169.254.169.254]/",
		"https://[fe80::1%25eth0]/",
		"https://user:pw@shop.example.com/",
		"https://2130706433/",
		"HTTPS://SHOP.EXAMPLE.COM/",
		"https://shop.example.com:65536/",
		"https://[64:ff9b::a9fe:a9fe]/",
		"https://[::a9fe:a9fe]/",
		"https://[::ffff:0:a9fe:a9fe]/",
		"https://[64:ff9b:1::a9fe:a9fe]/",
		"https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
		"https:///x",
		"https://shop.example.com/\x00",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, dev bool) {
		p := webhook.Policy{Dev: dev}
		u, err := p.CheckURL(raw)
		if err != nil {
			return
		}
		if u.Scheme != "https" && !(dev && u.Scheme == "http") {
			t.Fatalf("accepted scheme %q", u.Scheme)
		}
		if u.Hostname() == "" || u.User != nil {
			t.Fatalf("accepted %q: host %q, user %v", raw, u.Hostname(), u.User)
		}
		if len(raw) > webhook.MaxURLLength || strings.ContainsAny(raw, " \r\n\x00#") {
			t.Fatalf("accepted %q", raw)
		}
		if a, err := netip.ParseAddr(u.Hostname()); err == nil {
			if err := p.CheckAddr(a); err != nil {
				t.Fatalf("accepted refused address %s: %v", a, err)
			}
		}
	})
}
