package webhook_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stkgate/stkgate/events/kit/webhook"
)

func TestControlChecksTheConnectedAddress(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"203.0.113.10:443", true},
		{"127.0.0.1:443", false},
		{"[::ffff:10.0.0.1]:443", false},
		{"[fd00:ec2::254]:80", false},
		{"169.254.169.254:80", false},
		{"not an address", false},
	} {
		err := webhook.Policy{}.Control("tcp", tc.addr)
		if (err == nil) != tc.ok {
			t.Errorf("control(%s) = %v, want ok %v", tc.addr, err, tc.ok)
		}
	}
}

// counting is a receiver that counts its requests.
func counting(t *testing.T, tls bool, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	f := func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if h != nil {
			h(w, r)
		}
	}
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(http.HandlerFunc(f))
	} else {
		srv = httptest.NewServer(http.HandlerFunc(f))
	}
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestClientRefusesLoopbackInProduction(t *testing.T) {
	srv, n := counting(t, true, nil)
	c := webhook.NewClient(webhook.ClientConfig{TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig})
	res := c.Post(context.Background(), srv.URL, nil, []byte("{}"))
	if !errors.Is(res.Err, webhook.ErrRefused) || res.Status != 0 {
		t.Errorf("Post to %s = %+v, want refused", srv.URL, res)
	}
	if n.Load() != 0 {
		t.Error("the receiver was reached")
	}
}

// TestClientDNSRebinding: a name that resolved to a public address at
// registration and to a private one at delivery is refused at delivery.
func TestClientDNSRebinding(t *testing.T) {
	srv, n := counting(t, true, nil)
	port := srv.URL[strings.LastIndexByte(srv.URL, ':'):]
	url := "https://merchant.example.com" + port + "/hooks"
	var answers atomic.Int32
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		if answers.Add(1) == 1 {
			return []netip.Addr{netip.MustParseAddr("203.0.113.10")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	if _, err := (webhook.Policy{}).Resolve(context.Background(), lookup, url); err != nil {
		t.Fatalf("registration: %v", err)
	}
	c := webhook.NewClient(webhook.ClientConfig{Lookup: lookup, TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig})
	res := c.Post(context.Background(), url, nil, []byte("{}"))
	if !errors.Is(res.Err, webhook.ErrRefused) {
		t.Errorf("delivery after the DNS answer changed = %+v, want refused", res)
	}
	if n.Load() != 0 {
		t.Error("the receiver was reached")
	}
}

func TestClientFollowsNoRedirect(t *testing.T) {
	target, hit := counting(t, false, nil)
	srv, _ := counting(t, false, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	})
	c := webhook.NewClient(webhook.ClientConfig{Policy: webhook.Policy{Dev: true}})
	res := c.Post(context.Background(), srv.URL, nil, []byte("{}"))
	if res.Status != http.StatusFound || res.Err != nil {
		t.Errorf("Post = %+v, want the 302 itself", res)
	}
	if hit.Load() != 0 {
		t.Error("the redirect was followed")
	}
}

func TestClientReadsABoundedExcerpt(t *testing.T) {
	srv, _ := counting(t, false, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte(strings.Repeat("é", 1<<20)))
	})
	c := webhook.NewClient(webhook.ClientConfig{Policy: webhook.Policy{Dev: true}})
	res := c.Post(context.Background(), srv.URL, http.Header{"Webhook-Id": {"x"}}, []byte("{}"))
	if res.Status != http.StatusTeapot || len(res.Excerpt) > webhook.ExcerptBytes+3 || len(res.Excerpt) < webhook.ExcerptBytes-3 {
		t.Errorf("Post = status %d, excerpt of %d bytes; want 418 and about %d", res.Status, len(res.Excerpt), webhook.ExcerptBytes)
	}
}

func TestClientTimesOutAHangingReceiver(t *testing.T) {
	release := make(chan struct{})
	srv, _ := counting(t, false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	c := webhook.NewClient(webhook.ClientConfig{Policy: webhook.Policy{Dev: true}, Timeout: 200 * time.Millisecond})
	start := time.Now()
	res := c.Post(context.Background(), srv.URL, nil, []byte("{}"))
	if res.Err == nil || res.Status != 0 {
		t.Errorf("Post = %+v, want a timeout", res)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Post took %s, want about the 200ms timeout", d)
	}
}

// TestClientErrorHidesTheURL: a merchant's URL may carry a credential in
// its query; the error recorded and logged does not repeat the URL.
func TestClientErrorHidesTheURL(t *testing.T) {
	c := webhook.NewClient(webhook.ClientConfig{Policy: webhook.Policy{Dev: true}, Timeout: time.Second})
	res := c.Post(context.Background(), "http://127.0.0.1:1/hooks?token=s3cr3t-9f2a", nil, []byte("{}"))
	if res.Err == nil {
		t.Fatal("no error from a closed port")
	}
	if strings.Contains(res.Err.Error(), "s3cr3t-9f2a") {
		t.Errorf("error shows the URL's query: %v", res.Err)
	}
}

func TestClientReadsRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"120", 2 * time.Minute},
		{"0", 0},
		{"-5", 0},
		{"soon", 0},
		{"99999999", webhook.MaxRetryAfter},
		{time.Now().Add(time.Hour + time.Minute).UTC().Format(http.TimeFormat), webhook.MaxRetryAfter},
	} {
		srv, _ := counting(t, false, func(w http.ResponseWriter, r *http.Request) {
			if tc.header != "" {
				w.Header().Set("Retry-After", tc.header)
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		})
		c := webhook.NewClient(webhook.ClientConfig{Policy: webhook.Policy{Dev: true}})
		res := c.Post(context.Background(), srv.URL, nil, []byte("{}"))
		if res.RetryAfter != tc.want {
			t.Errorf("Retry-After %q: %s, want %s", tc.header, res.RetryAfter, tc.want)
		}
	}
}

// TestClientErrorCategories: what is stored and served of an attempt's
// error is one of a few fixed texts, never the resolver's, the network's
// or the receiver's details (internal addresses among them); the detail
// stays in res.Err, for the worker's log.
func TestClientErrorCategories(t *testing.T) {
	release := make(chan struct{})
	hanging, _ := counting(t, false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	tlsSrv, _ := counting(t, true, nil)
	hijacked, _ := counting(t, false, func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = c.Close()
		}
	})
	noHost := func(context.Context, string) ([]netip.Addr, error) {
		return nil, &net.DNSError{Err: "no such host", Name: "shop.invalid", Server: "10.255.255.53:53", IsNotFound: true}
	}
	private := func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("10.9.8.7")}, nil
	}
	dev := webhook.Policy{Dev: true}
	for _, tc := range []struct {
		name   string
		cfg    webhook.ClientConfig
		url    string
		want   string
		hidden string
	}{
		{"dns", webhook.ClientConfig{Policy: dev, Lookup: noHost}, "http://shop.invalid/hooks", webhook.ErrTextDNS, "10.255.255.53"},
		{"refused address", webhook.ClientConfig{Lookup: private}, "https://shop.example.com/hooks", "refused address: private", "10.9.8.7"},
		{"timeout", webhook.ClientConfig{Policy: dev, Timeout: 200 * time.Millisecond}, hanging.URL, webhook.ErrTextTimeout, "127.0.0.1"},
		{"tls", webhook.ClientConfig{Policy: dev}, tlsSrv.URL, webhook.ErrTextTLS, "127.0.0.1"},
		{"connection refused", webhook.ClientConfig{Policy: dev}, "http://127.0.0.1:1/hooks", webhook.ErrTextConnRefused, "127.0.0.1"},
		{"closed", webhook.ClientConfig{Policy: dev}, hijacked.URL, webhook.ErrTextClosed, "127.0.0.1"},
	} {
		res := webhook.NewClient(tc.cfg).Post(context.Background(), tc.url, nil, []byte("{}"))
		got := webhook.Describe(res.Err)
		if got != tc.want || strings.Contains(got, tc.hidden) {
			t.Errorf("%s: %q (from %v), want %q", tc.name, got, res.Err, tc.want)
		}
		if res.Err == nil {
			t.Errorf("%s: no detail for the log", tc.name)
		}
	}
	if got := webhook.Describe(nil); got != "" {
		t.Errorf("Describe(nil) = %q", got)
	}
}

// TestPublicErrorText: a stored error text is served only when it is one
// of the fixed ones; an older free text (a resolver's, with its server's
// address) is not.
func TestPublicErrorText(t *testing.T) {
	for _, tc := range []struct{ stored, want string }{
		{"", ""},
		{webhook.ErrTextDNS, webhook.ErrTextDNS},
		{"refused address: loopback", "refused address: loopback"},
		{webhook.ErrTextBreakerOpen, webhook.ErrTextBreakerOpen},
		{"dial tcp: lookup x on 10.255.255.53:53: no such host", webhook.ErrTextOther},
		{"refused address: 10.0.0.1", webhook.ErrTextOther},
	} {
		if got := webhook.PublicErrorText(tc.stored); got != tc.want {
			t.Errorf("PublicErrorText(%q) = %q, want %q", tc.stored, got, tc.want)
		}
	}
}

// TestClientExcerptBoundedAfterReplacement: an answer of invalid bytes,
// each replaced by U+FFFD (3 bytes), still gives an excerpt of at most
// ExcerptBytes, valid UTF-8.
func TestClientExcerptBoundedAfterReplacement(t *testing.T) {
	for _, body := range [][]byte{
		bytes.Repeat([]byte{0xff}, 1<<16),
		bytes.Repeat([]byte{0}, 1<<16),
		bytes.Repeat([]byte("\xffa"), 1<<15),
		append(bytes.Repeat([]byte("a"), webhook.ExcerptBytes-1), "é"...),
	} {
		srv, _ := counting(t, false, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write(body)
		})
		c := webhook.NewClient(webhook.ClientConfig{Policy: webhook.Policy{Dev: true}})
		res := c.Post(context.Background(), srv.URL, nil, []byte("{}"))
		if len(res.Excerpt) > webhook.ExcerptBytes || !utf8.ValidString(res.Excerpt) || strings.ContainsRune(res.Excerpt, 0) {
			t.Errorf("excerpt of %d bytes (valid %v), want at most %d, valid UTF-8, no NUL", len(res.Excerpt), utf8.ValidString(res.Excerpt), webhook.ExcerptBytes)
		}
	}
}
