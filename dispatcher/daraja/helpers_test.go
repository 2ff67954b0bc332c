package daraja_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
)

const (
	testKey     = "consumer-key-1"
	testSecret  = "consumer-secret-XYZ"
	testShort   = "174379"
	testPassKey = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
	testPhone   = "254712345678"
	testCB      = "https://pay.example.com/hooks/stk-push/550e8400-e29b-41d4-a716-446655440000"
)

// fixedNow is 21 March 2024 14:30:55 in Nairobi.
var fixedNow = time.Date(2024, 3, 21, 11, 30, 55, 0, time.UTC)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fixtures", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reply answers with status, content type and body.
func reply(status int, contentType string, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}
}

func replyJSON(status int, body []byte) http.HandlerFunc {
	return reply(status, "application/json", body)
}

// request is one request a stub received.
type request struct {
	Method, Path string
	Header       http.Header
	Body         []byte
}

// stub is an httptest Daraja whose answers a test chooses.
type stub struct {
	*httptest.Server
	oauthCalls atomic.Int64
	apiCalls   atomic.Int64
	mu         sync.Mutex
	requests   []request
}

// newStub serves api on the push and query paths and oauth (nil: the
// oauth-ok fixture) on the OAuth path.
func newStub(t testing.TB, oauth, api http.HandlerFunc) *stub {
	t.Helper()
	if oauth == nil {
		oauth = replyJSON(http.StatusOK, fixture(t, "oauth-ok.json"))
	}
	s := &stub{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.requests = append(s.requests, request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
		s.mu.Unlock()
		switch r.URL.Path {
		case daraja.PathOAuth:
			s.oauthCalls.Add(1)
			oauth(w, r)
		case daraja.PathPush, daraja.PathQuery:
			s.apiCalls.Add(1)
			api(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *stub) apiRequests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []request
	for _, r := range s.requests {
		if r.Path != daraja.PathOAuth {
			out = append(out, r)
		}
	}
	return out
}

func testConfig(base string) daraja.Config {
	return daraja.Config{
		BaseURL:        base,
		ConsumerKey:    testKey,
		ConsumerSecret: testSecret,
		ShortCode:      testShort,
		PassKey:        testPassKey,
		Timeout:        5 * time.Second,
	}
}

func newClient(t testing.TB, cfg daraja.Config) *daraja.Client {
	t.Helper()
	c, err := daraja.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func validPush() daraja.PushRequest {
	return daraja.PushRequest{
		Phone:            testPhone,
		Amount:           1500,
		AccountReference: "INV-2024-001",
		TransactionDesc:  "Payment",
		CallbackURL:      testCB,
	}
}

// asError returns err as *daraja.Error or fails.
func asError(t testing.TB, err error) *daraja.Error {
	t.Helper()
	var e *daraja.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *daraja.Error", err, err)
	}
	return e
}

// clock is a settable Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// noSecrets fails when s shows a secret the client holds.
func noSecrets(t testing.TB, s string, extra ...string) {
	t.Helper()
	secrets := append([]string{testSecret, testPassKey, daraja.Password(testShort, testPassKey, daraja.Timestamp(fixedNow)),
		"c9SQxWWhmdVRlyh0zh8gZDTkubVF"}, extra...)
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%q shows a secret", s)
		}
	}
}

// checkTidy: an error carries a code that never reads as success, text
// that events.CleanText would leave as it is, and a sane RequestID.
func checkTidy(t testing.TB, e *daraja.Error) {
	t.Helper()
	if e.Code == "" || strings.TrimLeft(e.Code, "0.") == "" {
		t.Errorf("Code %q: empty or reads as success", e.Code)
	}
	if c := events.CleanText(e.Message, events.MaxTextRunes); c != e.Message {
		t.Errorf("Message %q is not clean (%q)", e.Message, c)
	}
	if len(e.RequestID) > daraja.MaxIDLen || strings.ContainsFunc(e.RequestID, func(r rune) bool { return r < ' ' || r > '~' }) {
		t.Errorf("RequestID %q is not a sane id", e.RequestID)
	}
}
