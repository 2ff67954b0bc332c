package callback

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
)

// refusedCopyBound is the most a copy of an unauthenticated callback takes
// in the stream: its cut body (RefusedBodyBytes), its headers (the request
// values are cut: about 3.3 KiB at most) and the store's own overhead.
const refusedCopyBound = RefusedBodyBytes + 4<<10

// TestRefusedFloodKeepsGenuine: a genuine callback refused for its source
// (its token right: a Safaricom address missing from an outdated allowlist),
// then 10,001 forged callbacks of 4 KiB and (one in fifty) 64 KiB, from
// outside the allowlist, with no token, a wrong one or no tracking id. The
// genuine copy survives whole, and the stream grows by no more than a
// bound: the forged copies are cut, and stored at a bounded rate per
// source.
func TestRefusedFloodKeepsGenuine(t *testing.T) {
	t.Parallel()
	const flood = events.CallbackMaxPerSubject + 1
	tests := []struct {
		name      string
		addresses int // the forgers' addresses
		maxGrowth int64
	}{
		{"from one address", 1, RefusedBurst * refusedCopyBound},
		{"each from an address of its own", flood, events.CallbackMaxPerSubject * refusedCopyBound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnvWith(t, Options{Sources: SourcePolicy{Allow: prefixes("196.201.214.0/24")}})
			id := uuid.NewString()
			e.requestDispatched(payment(id))
			genuine := readFixture(t, "success")
			if status := e.serve(RoutePrefix+tokenPath(id), "203.0.113.7", bytes.NewReader(genuine)); status != http.StatusForbidden {
				t.Fatalf("genuine callback from outside the allowlist answered %d, want 403", status)
			}
			before := e.streamBytes()

			// Every 50th forgery is as large as a callback may be; the others
			// are twice the cut: reading 64 KiB ten thousand times under the
			// race detector is most of the test's time, and a copy is cut
			// to RefusedBodyBytes whatever the size beyond.
			largest := bytes.Repeat([]byte("x"), MaxBodyBytes)
			forged := func(i int) []byte {
				if i%50 == 0 {
					return largest
				}
				return largest[:2*RefusedBodyBytes]
			}
			victim := uuid.NewString()
			paths := []string{
				RoutePrefix + victim,
				RoutePrefix + victim + "/" + strings.Repeat("A", 43),
				RoutePrefix + "not-a-tracking-id",
			}
			// Sent eight at a time, as a flood comes: the limits hold across
			// concurrent requests, and the run takes a fraction of the time
			// one at a time would.
			start := time.Now()
			var (
				next  atomic.Int64
				wrong atomic.Int64
				wg    sync.WaitGroup
			)
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := int(next.Add(1) - 1); i < flood && wrong.Load() == 0; i = int(next.Add(1) - 1) {
						n := i % tt.addresses
						addr := fmt.Sprintf("10.%d.%d.%d", n>>16, n>>8&0xff, n&0xff)
						if status := e.serve(paths[i%len(paths)], addr, bytes.NewReader(forged(i))); status != http.StatusForbidden {
							wrong.Add(1)
							t.Errorf("forged callback %d answered %d, want 403", i, status)
						}
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			took := time.Since(start)
			growth := e.streamBytes() - before
			t.Logf("%d forged callbacks of %d or %d bytes %s: the stream grew by %d bytes (%.1f MiB; bound %d) in %v",
				flood, 2*RefusedBodyBytes, MaxBodyBytes, tt.name, growth, float64(growth)/(1<<20), tt.maxGrowth, took.Round(time.Millisecond))
			if growth > tt.maxGrowth {
				t.Errorf("the stream grew by %d bytes, want at most %d", growth, tt.maxGrowth)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			subject := events.CallbackSubjectRefused(events.UnmatchedForbiddenSource, id)
			kept, err := e.callbackStream().GetLastMsgForSubject(ctx, subject)
			if err != nil {
				t.Fatalf("the genuine callback is not on %s: %v", subject, err)
			}
			if !bytes.Equal(kept.Data, genuine) || kept.Header.Get(events.CallbackHeaderTruncated) != "" {
				t.Errorf("the genuine callback's copy is not whole: %q", kept.Data)
			}
		})
	}
}

// serve sends a POST of body to path from addr straight to the handler,
// and returns the answer's status.
func (e *testEnv) serve(path, addr string, body io.Reader) int {
	req := httptest.NewRequest(http.MethodPost, path, body)
	req.RemoteAddr = netip.AddrPortFrom(netip.MustParseAddr(addr), 443).String()
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec.Code
}

// streamBytes is the size of STK_CALLBACKS.
func (e *testEnv) streamBytes() int64 {
	e.t.Helper()
	return int64(e.callbackStream().CachedInfo().State.Bytes)
}

// hangUp is a body whose sender hangs up after data.
type hangUp struct{ data []byte }

func (b *hangUp) Read(p []byte) (int, error) {
	if len(b.data) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

// TestRefusedCallbackKept: a refused callback whose token is right for its
// tracking id is kept whole, on a subject of that payment's own when its
// source is refused; one without is kept cut to RefusedBodyBytes (whole
// when it is the size of a real callback), on its reason's shared subject.
func TestRefusedCallbackKept(t *testing.T) {
	t.Parallel()
	id := uuid.NewString()
	big := strings.Repeat("x", MaxBodyBytes)
	cut := big[:RefusedBodyBytes]
	success := string(readFixture(t, "success"))
	const inside, outside = "196.201.214.200", "203.0.113.7"
	wrongToken := RoutePrefix + id + "/" + strings.Repeat("A", 43)
	tests := []struct {
		name    string
		path    string
		addr    string
		body    string
		hangUp  bool // the sender hangs up after body
		status  int
		subject string
		reason  string
		kept    string
		cutFrom string
		detail  string
	}{
		{"token right, source refused: whole, on the payment's subject", RoutePrefix + tokenPath(id), outside, big, false, 403,
			events.CallbackSubjectRefused(events.UnmatchedForbiddenSource, id), events.UnmatchedForbiddenSource, big, "", "source " + outside},
		{"no token, source refused: cut", RoutePrefix + id, outside, big, false, 403,
			events.CallbackSubjectUnmatched(events.UnmatchedForbiddenSource), events.UnmatchedForbiddenSource, cut, "65536", "source " + outside},
		{"wrong token: cut", wrongToken, inside, big, false, 200,
			events.CallbackSubjectUnmatched(events.UnmatchedBadToken), events.UnmatchedBadToken, cut, "65536", ""},
		{"no token, the size of a real callback: whole", RoutePrefix + id, inside, success, false, 200,
			events.CallbackSubjectUnmatched(events.UnmatchedNoToken), events.UnmatchedNoToken, success, "", ""},
		{"no tracking id: cut", RoutePrefix + "not-a-tracking-id", inside, big, false, 404,
			events.CallbackSubjectUnmatched(events.UnmatchedBadPath), events.UnmatchedBadPath, cut, "65536", ""},
		{"token right, unparseable: whole", RoutePrefix + tokenPath(id), inside, big, false, 400,
			events.CallbackSubjectUnmatched(events.UnmatchedUnparseable), events.UnmatchedUnparseable, big, "", "not JSON"},
		{"token right, cut short by its sender: whole as it came", RoutePrefix + tokenPath(id), inside, big, true, 400,
			events.CallbackSubjectUnmatched(events.UnmatchedUnparseable), events.UnmatchedUnparseable, big, "", "body unreadable"},
		{"wrong token, cut short by its sender: cut", wrongToken, inside, big, true, 400,
			events.CallbackSubjectUnmatched(events.UnmatchedBadToken), events.UnmatchedBadToken, cut, "65536", "body unreadable"},
		{"token right, cut short, source refused: whole, on the payment's subject", RoutePrefix + tokenPath(id), outside, big, true, 403,
			events.CallbackSubjectRefused(events.UnmatchedForbiddenSource, id), events.UnmatchedForbiddenSource, big, "", "body unreadable; source " + outside},
	}
	e := newEnvWith(t, Options{Sources: SourcePolicy{Allow: prefixes("196.201.214.0/24")}})
	e.requestDispatched(payment(id))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.lastKept()
			var body io.Reader = strings.NewReader(tt.body)
			if tt.hangUp {
				body = &hangUp{data: []byte(tt.body)}
			}
			if status := e.serve(tt.path, tt.addr, body); status != tt.status {
				t.Errorf("answered %d, want %d", status, tt.status)
			}
			_, raw, _ := e.keptSince(before)
			if len(raw) != 1 {
				t.Fatalf("kept %d copies, want 1", len(raw))
			}
			m := raw[0]
			got := []string{m.Subject, m.Header.Get(events.CallbackHeaderReason), m.Header.Get(events.CallbackHeaderTruncated), m.Header.Get(events.CallbackHeaderDetail)}
			want := []string{tt.subject, tt.reason, tt.cutFrom, tt.detail}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("subject, reason, truncated from, detail (-want +got):\n%s", diff)
			}
			if string(m.Data) != tt.kept {
				t.Errorf("kept %d bytes, want %d", len(m.Data), len(tt.kept))
			}
			if n, _ := e.completed(id); n != 0 {
				t.Errorf("%d stk.completed, want none", n)
			}
		})
	}
}

// TestRefusedRateLimitedPerSource: a source (an IPv4 address, an IPv6 /64)
// has at most RefusedBurst unauthenticated callbacks kept at once (the
// test's clock stands still, so nothing refills); the others are answered
// as usual, not kept, and logged once (not once each: the logs must not
// fill up instead). Other sources, and callbacks with
// their token right, are not held back.
func TestRefusedRateLimitedPerSource(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, Options{Sources: SourcePolicy{Allow: prefixes("196.201.214.0/24, 2001:db8::/32")}})
	id := uuid.NewString()
	e.requestDispatched(payment(id))
	forged := readFixture(t, "success")
	noToken := RoutePrefix + id
	tests := []struct {
		name   string
		path   string
		addr   string
		n      int
		status int
		kept   int
	}{
		{"a source's burst is kept", noToken, "196.201.214.1", RefusedBurst, 200, RefusedBurst},
		{"past it, nothing", noToken, "196.201.214.1", 5, 200, 0},
		{"nor with another reason", RoutePrefix + id + "/" + strings.Repeat("A", 43), "196.201.214.1", 1, 200, 0},
		{"another address is kept", noToken, "196.201.214.2", 1, 200, 1},
		{"an IPv6 /64's burst", noToken, "2001:db8::1", RefusedBurst, 200, RefusedBurst},
		{"another address of the same /64: nothing", noToken, "2001:db8::2", 1, 200, 0},
		{"another /64", noToken, "2001:db8:0:1::1", 1, 200, 1},
		{"the token right, from the limited source", RoutePrefix + tokenPath(id), "196.201.214.1", 1, 200, 1},
		{"the token right, source refused, from the limited source", RoutePrefix + tokenPath(id), "196.201.215.1", 1, 403, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.lastKept()
			for range tt.n {
				if status := e.serve(tt.path, tt.addr, bytes.NewReader(forged)); status != tt.status {
					t.Fatalf("answered %d, want %d", status, tt.status)
				}
			}
			if kept, _, _ := e.keptSince(before); len(kept) != tt.kept {
				t.Errorf("kept %d, want %d", len(kept), tt.kept)
			}
		})
	}
	logs := e.logs.String()
	if n := strings.Count(logs, "its source is over its storage rate; the next ones"); n != 2 {
		t.Errorf("%d warnings of a source over its rate, want 2 (one per source):\n%s", n, logs)
	}
	if n := strings.Count(logs, `"level":"WARN","msg":"callback without a token`); n != 2*RefusedBurst+2 {
		t.Errorf("%d warnings of a callback without a token, want %d (one per copy kept)", n, 2*RefusedBurst+2)
	}
	if n := strings.Count(logs, `"level":"WARN","msg":"callback with a wrong token`); n != 0 {
		t.Errorf("%d warnings of a callback with a wrong token, want none (none was kept)", n)
	}
}

// TestRefusedStorageBoundedOverAllSources: a flood from more sources than
// the table holds (every /64 of an IPv6 /48, a botnet) is stored at most at
// the total rate, not at the table's size times a source's burst.
func TestRefusedStorageBoundedOverAllSources(t *testing.T) {
	t.Parallel()
	l := newSourceLimits(RefusedRate, RefusedBurst, maxRefusedSources).withTotal(RefusedTotalRate, RefusedTotalBurst)
	kept := 0
	for i := range 20000 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, byte(i >> 8), byte(i)})
		if ok, _ := l.take(sourceKey(a, true), clock); ok {
			kept++
		}
	}
	if kept != RefusedTotalBurst {
		t.Errorf("kept %d of 20,000 /64s' callbacks at one instant, want the total burst %d", kept, RefusedTotalBurst)
	}
	later := 0
	for i := range 20000 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, byte(i >> 8), byte(i)})
		if ok, _ := l.take(sourceKey(a, true), clock.Add(time.Second)); ok {
			later++
		}
	}
	if later > RefusedTotalRate {
		t.Errorf("kept %d a second later, want at most the total rate %d", later, RefusedTotalRate)
	}
}

// TestSourceLimits: a bucket per source, refilled with time; at most max
// buckets are held, idle ones given up for new sources, and the sources
// past max share one.
func TestSourceLimits(t *testing.T) {
	t.Parallel()
	at := func(s int) time.Time { return clock.Add(time.Duration(s) * time.Second) }
	src := func(s string) netip.Prefix { return sourceKey(netip.MustParseAddr(s), true) }
	l := newSourceLimits(1, 2, 2) // refilled in 2s
	steps := []struct {
		source    string
		at        int
		ok, first bool
		size      int
	}{
		{"10.0.0.1", 0, true, false, 1},
		{"10.0.0.1", 0, true, false, 1},
		{"10.0.0.1", 0, false, true, 1},
		{"10.0.0.1", 0, false, false, 1},
		{"10.0.0.1", 1, true, false, 1},
		{"10.0.0.2", 1, true, false, 2},
		// The table is full and nobody idle: the overflow bucket.
		{"10.0.0.3", 1, true, false, 2},
		{"10.0.0.4", 1, true, false, 2},
		{"10.0.0.5", 1, false, true, 2},
		// Idle long enough: given up for a new source.
		{"10.0.0.5", 9, true, false, 1},
		{"10.0.0.5", 9, true, false, 1},
		{"10.0.0.5", 9, false, true, 1},
	}
	for i, s := range steps {
		ok, first := l.take(src(s.source), at(s.at))
		if ok != s.ok || first != s.first || l.size() != s.size {
			t.Errorf("step %d: take(%s, %ds) = %v, %v with %d buckets; want %v, %v with %d", i, s.source, s.at, ok, first, l.size(), s.ok, s.first, s.size)
		}
	}

	// A flood from as many addresses as it likes holds max buckets.
	l = newSourceLimits(RefusedRate, RefusedBurst, 100)
	for i := range 100000 {
		l.take(sourceKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), true), at(i/1000))
	}
	if n := l.size(); n > 100 {
		t.Errorf("%d buckets held, want at most 100", n)
	}
}

func TestSourceKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr string
		ok   bool
		want string
	}{
		{"196.201.214.200", true, "196.201.214.200/32"},
		{"2001:db8::1", true, "2001:db8::/64"},
		{"2001:db8::ffff:1", true, "2001:db8::/64"},
		{"fe80::1%eth0", true, "fe80::/64"},
		{"196.201.214.200", false, "invalid Prefix"},
	}
	for _, tt := range tests {
		if got := sourceKey(netip.MustParseAddr(tt.addr), tt.ok).String(); got != tt.want {
			t.Errorf("sourceKey(%s, %v) = %s, want %s", tt.addr, tt.ok, got, tt.want)
		}
	}
}

// TestRefusedCopyBound: a forged callback with every request value that is
// kept at its longest takes at most refusedCopyBound in the stream, the
// figure SECURITY.md's bound on a flood is made of.
func TestRefusedCopyBound(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, Options{Sources: SourcePolicy{TrustedProxies: prefixes("127.0.0.0/8")}})
	long := strings.Repeat("x", 2*maxPathHeader)
	req := httptest.NewRequest(http.MethodPost, RoutePrefix+long, bytes.NewReader(bytes.Repeat([]byte("x"), MaxBodyBytes)))
	req.RemoteAddr = "127.0.0.1:443"
	req.Header.Set("X-Forwarded-For", strings.Repeat("203.0.113.77, ", 100)+"203.0.113.7")
	req.Header.Set("Content-Type", long)
	req.Header.Set("BusinessShortCode", long)
	before := e.streamBytes()
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound {
		t.Fatalf("answered %d, want 404", rec.Code)
	}
	grew := e.streamBytes() - before
	t.Logf("a refused copy with every kept value at its longest: %d bytes", grew)
	if grew == 0 || grew > refusedCopyBound {
		t.Errorf("the copy takes %d bytes, want at most %d", grew, refusedCopyBound)
	}
}
