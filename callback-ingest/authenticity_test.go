package callback

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/cidr"
)

const successCheckoutID = "ws_CO_21032024143055123712345678" // the success fixture's

// TestCallbackForged: a callback whose URL lacks the tracking id's token
// changes nothing, is answered like any kept callback, and is kept on an
// unmatched subject saying why. The token never reaches a log line.
func TestCallbackForged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	victim, other := uuid.NewString(), uuid.NewString()
	for _, id := range []string{victim, other} {
		e.request(payment(id))
		e.dispatch(payment(id), "6e86-45dd-91ac-fd5d4178ab523002867", successCheckoutID)
	}
	foreign, err := events.ParseCallbackSecrets("a-secret-stkgate-never-had-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	genuine := testSecrets.Token(victim)
	flipped := []byte(genuine)
	flipped[0] ^= 1
	success := string(readFixture(t, "success"))

	tests := []struct {
		name, path, reason string
	}{
		{"no token", RoutePrefix + victim, events.UnmatchedNoToken},
		{"empty token", RoutePrefix + victim + "/", events.UnmatchedNoToken},
		{"token in the query string", RoutePrefix + victim + "?token=" + genuine, events.UnmatchedNoToken},
		{"wrong token", RoutePrefix + victim + "/" + strings.Repeat("A", len(genuine)), events.UnmatchedBadToken},
		{"one bit off", RoutePrefix + victim + "/" + string(flipped), events.UnmatchedBadToken},
		{"token of another tracking id", RoutePrefix + victim + "/" + testSecrets.Token(other), events.UnmatchedBadToken},
		{"token under another secret", RoutePrefix + victim + "/" + foreign.Token(victim), events.UnmatchedBadToken},
		{"token too long", RoutePrefix + victim + "/" + genuine + "AAAA", events.UnmatchedBadToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.lastKept()
			req, err := http.NewRequest(http.MethodPost, e.srv.URL+tt.path, strings.NewReader(success))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json;charset=UTF-8")
			if status, body := e.do(req); status != 200 || body != bodyAccepted {
				t.Errorf("answer %d %s, want 200 %s", status, body, bodyAccepted)
			}
			kept, _, _ := e.keptSince(before)
			if len(kept) != 1 || kept[0].Subject != events.CallbackSubjectUnmatched(tt.reason) ||
				kept[0].Headers[events.CallbackHeaderReason] != tt.reason || kept[0].Headers[events.CallbackHeaderTrackingID] != victim ||
				kept[0].Body != success {
				t.Fatalf("kept %+v, want one copy on %s", kept, events.CallbackSubjectUnmatched(tt.reason))
			}
			if n, _ := e.completed(">"); n != 0 {
				t.Fatalf("%d stk.completed published, want none", n)
			}
		})
	}
	// The genuine token still works afterwards: the refusals were the
	// token's doing.
	if status, body := e.post(http.MethodPost, victim, strings.NewReader(success)); status != 200 || body != bodyAccepted {
		t.Fatalf("genuine callback: answer %d %s", status, body)
	}
	if n, _ := e.completed(victim); n != 1 {
		t.Fatalf("genuine callback: %d stk.completed, want 1", n)
	}
	logs := e.logs.String()
	for _, want := range []string{`"msg":"callback without a token, not applied`, `"msg":"callback with a wrong token, not applied`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
	for _, tok := range []string{genuine, testSecrets.Token(other), foreign.Token(victim), genuine[:20]} {
		if strings.Contains(logs, tok) {
			t.Fatalf("a token is in the logs:\n%s", logs)
		}
	}
}

// TestCallbackSecretRotation: during a rotation (CALLBACK_SECRET=new,old)
// callbacks of pushes signed with either secret are applied; a secret taken
// off the list no longer verifies.
func TestCallbackSecretRotation(t *testing.T) {
	t.Parallel()
	newSecret, err := events.ParseCallbackSecrets(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	oldOnly, err := events.ParseCallbackSecrets(oldSecret)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, Options{Secrets: rotatedSecrets})
	success := readFixture(t, "success")
	for _, tc := range []struct {
		name   string
		signer events.CallbackSecrets
	}{{"signed with the new secret", newSecret}, {"signed with the old secret", oldOnly}} {
		t.Run(tc.name, func(t *testing.T) {
			id := uuid.NewString()
			e.request(payment(id))
			e.dispatch(payment(id), "6e86-45dd-91ac-fd5d4178ab523002867", successCheckoutID)
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+RoutePrefix+id+"/"+tc.signer.Token(id), strings.NewReader(freshReceipt(string(success))))
			if status, body := e.do(req); status != 200 || body != bodyAccepted {
				t.Fatalf("answer %d %s", status, body)
			}
			if n, _ := e.completed(id); n != 1 {
				t.Fatalf("%d stk.completed, want 1", n)
			}
		})
	}
	t.Run("old secret dropped", func(t *testing.T) {
		e := newEnvWith(t, Options{Secrets: newSecret})
		id := uuid.NewString()
		e.request(payment(id))
		e.dispatch(payment(id), "6e86-45dd-91ac-fd5d4178ab523002867", successCheckoutID)
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+RoutePrefix+id+"/"+oldOnly.Token(id), strings.NewReader(string(success)))
		if status, _ := e.do(req); status != 200 {
			t.Fatalf("answer %d", status)
		}
		if n, _ := e.completed(id); n != 0 {
			t.Fatalf("%d stk.completed, want none", n)
		}
	})
}

// TestCallbackReplayed: a genuine callback sent again (same URL, same body)
// changes nothing, and so does a genuine callback of one payment replayed to
// another payment's genuine URL: the CheckoutRequestID is not that push's,
// as stk.dispatched names it or, before it, the dispatcher's attempt record.
func TestCallbackReplayed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	paid, victim, early := uuid.NewString(), uuid.NewString(), uuid.NewString()
	e.request(payment(paid))
	e.dispatch(payment(paid), "6e86-45dd-91ac-fd5d4178ab523002867", successCheckoutID)
	e.request(payment(victim))
	e.dispatch(payment(victim), "m-victim", "ws_CO_VICTIM_PUSH")
	e.request(payment(early))
	e.attemptAt(payment(early), events.AttemptAccepted, "ws_CO_EARLY_PUSH", clock.Add(-time.Minute))
	success := string(readFixture(t, "success"))
	if status, _ := e.post(http.MethodPost, paid, strings.NewReader(success)); status != 200 {
		t.Fatalf("first delivery answered %d", status)
	}
	_, first := e.completed(paid)

	tests := []struct {
		name, id, subject, reason string
	}{
		{"same payment again", paid, events.CallbackSubjectReceived(paid), "repeated"},
		{"to another payment's URL", victim, events.CallbackSubjectUnmatched(events.UnmatchedOtherPush), events.UnmatchedOtherPush},
		{"to another payment's URL before its stk.dispatched", early, events.CallbackSubjectUnmatched(events.UnmatchedOtherPush), events.UnmatchedOtherPush},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.lastKept()
			if status, body := e.post(http.MethodPost, tt.id, strings.NewReader(success)); status != 200 || body != bodyAccepted {
				t.Fatalf("answer %d %s", status, body)
			}
			kept, _, _ := e.keptSince(before)
			if len(kept) != 1 || kept[0].Subject != tt.subject || kept[0].Headers[events.CallbackHeaderReason] != tt.reason {
				t.Fatalf("kept %+v, want one copy on %s (%s)", kept, tt.subject, tt.reason)
			}
			if n, last := e.completed(paid); n != 1 || last.Sequence != first.Sequence {
				t.Fatalf("%d stk.completed for the paid payment, want the first one only", n)
			}
			if n, _ := e.completed(tt.id); tt.id != paid && n != 0 {
				t.Fatalf("%d stk.completed for the victim, want none", n)
			}
		})
	}
}

// TestCallbackSourceRefused: a callback from outside CALLBACK_ALLOW_CIDRS is
// answered 403, changes nothing and is kept with its source; its token
// being right, whole, on its own payment's subject.
func TestCallbackSourceRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		sources SourcePolicy
		xff     string
		allowed bool
		source  string
	}{
		{"no allowlist", SourcePolicy{}, "", true, ""},
		{"peer allowed", SourcePolicy{Allow: prefixes("127.0.0.0/8")}, "", true, ""},
		{"peer refused", SourcePolicy{Allow: prefixes("196.201.214.0/24")}, "", false, "127.0.0.1"},
		{"X-Forwarded-For of an untrusted peer ignored", SourcePolicy{Allow: prefixes("196.201.214.0/24")}, "196.201.214.200", false, "127.0.0.1"},
		{"X-Forwarded-For of a trusted proxy honoured",
			SourcePolicy{Allow: prefixes("196.201.214.0/24"), TrustedProxies: prefixes("127.0.0.0/8")}, "196.201.214.200", true, ""},
		{"trusted proxy forwarding an outsider",
			SourcePolicy{Allow: prefixes("196.201.214.0/24"), TrustedProxies: prefixes("127.0.0.0/8")}, "196.201.214.200, 203.0.113.9", false, "203.0.113.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnvWith(t, Options{Sources: tt.sources})
			id := uuid.NewString()
			e.request(payment(id))
			e.dispatch(payment(id), "6e86-45dd-91ac-fd5d4178ab523002867", successCheckoutID)
			success := string(readFixture(t, "success"))
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+RoutePrefix+tokenPath(id), strings.NewReader(success))
			if tt.xff != "" {
				req.Header.Set("X-Forwarded-For", tt.xff)
			}
			status, body := e.do(req)
			kept, _, _ := e.keptSince(0)
			n, _ := e.completed(id)
			if tt.allowed {
				if status != 200 || n != 1 {
					t.Fatalf("answer %d, %d stk.completed; want 200 and 1", status, n)
				}
				return
			}
			if status != 403 || body != `{"ResultCode":1,"ResultDesc":"Rejected: source not allowed"}`+"\n" {
				t.Errorf("answer %d %s, want 403", status, body)
			}
			if n != 0 {
				t.Errorf("%d stk.completed, want none", n)
			}
			subject := events.CallbackSubjectRefused(events.UnmatchedForbiddenSource, id)
			if len(kept) != 1 || kept[0].Subject != subject ||
				kept[0].Headers[events.CallbackHeaderDetail] != "source "+tt.source || kept[0].Body != success {
				t.Errorf("kept %+v, want the callback on %s with its source", kept, subject)
			}
			if !strings.Contains(e.logs.String(), `"source":"`+tt.source+`"`) {
				t.Errorf("the source is not logged:\n%s", e.logs.String())
			}
		})
	}
}

func prefixes(list string) []netip.Prefix {
	p, err := cidr.Parse(list)
	if err != nil {
		panic(err)
	}
	return p
}

// TestSourcePolicy: which address a request is taken to come from, and
// whether it is allowed, with and without trusted proxies.
func TestSourcePolicy(t *testing.T) {
	t.Parallel()
	safaricom := prefixes("196.201.212.0/24,196.201.213.0/24,196.201.214.0/24")
	proxies := prefixes("10.0.0.0/8, fd00::/8")
	tests := []struct {
		name    string
		policy  SourcePolicy
		peer    string
		xff     []string // one X-Forwarded-For header each
		source  string
		allowed bool
	}{
		{"no allowlist allows all", SourcePolicy{}, "203.0.113.9:5000", nil, "203.0.113.9", true},
		{"peer in the allowlist", SourcePolicy{Allow: safaricom}, "196.201.214.200:5000", nil, "196.201.214.200", true},
		{"peer outside", SourcePolicy{Allow: safaricom}, "203.0.113.9:5000", nil, "203.0.113.9", false},
		{"spoofed X-Forwarded-For from an untrusted peer", SourcePolicy{Allow: safaricom}, "203.0.113.9:5000",
			[]string{"196.201.214.200"}, "203.0.113.9", false},
		{"IPv4-mapped peer", SourcePolicy{Allow: safaricom}, "[::ffff:196.201.214.200]:5000", nil, "196.201.214.200", true},
		{"trusted proxy: client's address", SourcePolicy{Allow: safaricom, TrustedProxies: proxies}, "10.1.2.3:5000",
			[]string{"196.201.214.200"}, "196.201.214.200", true},
		{"trusted proxy: client's own X-Forwarded-For ignored", SourcePolicy{Allow: safaricom, TrustedProxies: proxies}, "10.1.2.3:5000",
			[]string{"196.201.214.200, 203.0.113.9"}, "203.0.113.9", false},
		{"trusted proxy: forged entry left of the real one", SourcePolicy{Allow: safaricom, TrustedProxies: proxies}, "10.1.2.3:5000",
			[]string{"203.0.113.9, 196.201.214.200"}, "196.201.214.200", true},
		{"two trusted proxies", SourcePolicy{Allow: safaricom, TrustedProxies: proxies}, "10.1.2.3:5000",
			[]string{"196.201.214.200, 10.9.9.9"}, "196.201.214.200", true},
		{"several headers read in order", SourcePolicy{Allow: safaricom, TrustedProxies: proxies}, "10.1.2.3:5000",
			[]string{"196.201.214.200", "10.9.9.9"}, "196.201.214.200", true},
		{"IPv6 proxy", SourcePolicy{Allow: safaricom, TrustedProxies: proxies}, "[fd00::1]:5000",
			[]string{"196.201.214.7"}, "196.201.214.7", true},
		{"trusted proxy without X-Forwarded-For", SourcePolicy{Allow: safaricom, TrustedProxies: proxies}, "10.1.2.3:5000",
			nil, "10.1.2.3", false},
		{"only trusted addresses", SourcePolicy{Allow: prefixes("10.0.0.0/8"), TrustedProxies: proxies}, "10.1.2.3:5000",
			[]string{"10.5.5.5, 10.6.6.6"}, "10.5.5.5", true},
		{"malformed X-Forwarded-For", SourcePolicy{Allow: safaricom, TrustedProxies: proxies}, "10.1.2.3:5000",
			[]string{"196.201.214.200, not-an-ip"}, "unreadable", false},
		{"malformed X-Forwarded-For without an allowlist", SourcePolicy{TrustedProxies: proxies}, "10.1.2.3:5000",
			[]string{"not-an-ip"}, "unreadable", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, RoutePrefix, nil)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			source, ok := tt.policy.Allowed(r)
			if source != tt.source || ok != tt.allowed {
				t.Errorf("Allowed = %q, %v; want %q, %v", source, ok, tt.source, tt.allowed)
			}
		})
	}
}

func TestParsePrefixes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		list, want, err string
	}{
		{"", "", ""},
		{" 196.201.214.0/24 , 196.201.213.7 ,2001:db8::/32,", "196.201.214.0/24,196.201.213.7/32,2001:db8::/32", ""},
		{"::ffff:196.201.214.0/120", "196.201.214.0/24", ""},
		{"196.201.214.9/24", "", "host bits"},
		{"196.201.214/24", "", "not a CIDR"},
		{"example.com", "", "neither a CIDR nor an address"},
	}
	for _, tt := range tests {
		got, err := cidr.Parse(tt.list)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("cidr.Parse(%q): err %v, want %q", tt.list, err, tt.err)
			}
			continue
		}
		if err != nil || cidr.String(got) != tt.want {
			t.Errorf("cidr.Parse(%q) = %s, %v; want %s", tt.list, cidr.String(got), err, tt.want)
		}
	}
}
