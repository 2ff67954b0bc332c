// Package darajatest is a fake Daraja (M-Pesa Express) for tests and for the
// dev stack's simulator, as net/http/httptest is to net/http.
//
// It serves the OAuth, STK push and STK query endpoints over real HTTP,
// refuses what Daraja refuses (with Daraja's error envelopes), accepts a
// valid push with fresh ids, and after a delay POSTs the outcome to the
// push's CallBackURL in Daraja's callback shape, once, without retry. A
// phone with an open prompt is locked until its outcome is final, as in
// Daraja: another push to it is answered 500 500.001.1001 "Unable to lock
// subscriber…", also when the first push's own answer was a failure
// (FailServiceUnavailableAfterAccept and the other *AfterAccept). The outcome is chosen by the phone's last four digits (see
// OutcomeFor) or scripted per phone (Server.Script), which can also make the
// first pushes fail in each way Daraja and its gateway fail.
//
// FailOAuth makes token requests fail in the ways the gateway in front of
// Daraja fails.
//
// Everything it receives and sends is recorded for assertions: Pushes,
// AcceptedPushes, Queries, Callbacks; WaitCallbacks and Drain wait for
// outcomes. Its API takes no testing.T, so the dev stack runs it as well.
package darajatest

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
)

// Defaults of Options. The shortcode and passkey are Safaricom's public
// sandbox values.
const (
	DefaultConsumerKey    = "test-key"
	DefaultConsumerSecret = "test-secret"
	DefaultShortCode      = "174379"
	DefaultPassKey        = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
	DefaultCallbackDelay  = 3 * time.Second
	DefaultTokenTTL       = 3599 * time.Second
)

// TimestampTolerance is how far a request's Timestamp may be from the
// server's clock before it is refused with "Invalid Timestamp".
const TimestampTolerance = 5 * time.Minute

// maxHang bounds how long a scripted timeout holds a request open when the
// client never gives up.
const maxHang = 10 * time.Minute

// callbackTimeout bounds each callback POST, as Daraja's own does.
const callbackTimeout = 10 * time.Second

// Options configures a Server. The zero value is a sandbox-like server on a
// random loopback port.
type Options struct {
	ConsumerKey    string // default DefaultConsumerKey
	ConsumerSecret string // default DefaultConsumerSecret
	ShortCode      string // default DefaultShortCode
	PassKey        string // default DefaultPassKey
	// Addr is the listen address; "" means 127.0.0.1:0 (a random port).
	Addr string
	// CallbackDelay is how long after accepting a push its outcome becomes
	// final and its callback is sent. Zero means DefaultCallbackDelay; a
	// negative value means at once.
	CallbackDelay time.Duration
	// Logger receives a line per request and callback; nil discards them.
	Logger *slog.Logger
	// TokenTTL is how long an access token is valid; zero means
	// DefaultTokenTTL. expires_in announces it in whole seconds, as a string.
	TokenTTL time.Duration
	// CallbackClient sends the callbacks; nil means one with a 10 s timeout.
	CallbackClient *http.Client
}

// Server is a running fake Daraja.
type Server struct {
	opts  Options
	log   *slog.Logger
	ln    net.Listener
	srv   *http.Server
	url   string
	hc    *http.Client
	stop  chan struct{}   // closed by Close: hanging handlers return
	ctx   context.Context // canceled by Close: callbacks in flight stop
	abort context.CancelFunc

	wg sync.WaitGroup // handlers, timers, callbacks; Add only under mu while !closed

	mu         sync.Mutex
	closed     bool
	changed    chan struct{} // closed and replaced on every recorded change
	tokens     map[string]time.Time
	scripts    map[string]*scriptState
	txns       map[string]*txn // by CheckoutRequestID
	open       map[string]*txn // phone → its open prompt
	pending    int             // outcomes not yet final and delivered
	pushes     []Push
	queries    []Query
	callbacks  []CallbackDelivery
	seq        int64
	oauthFault string // the kind FailOAuth set
	oauthFails int    // token requests it still fails
	tokenReqs  int
	closeErr   error
	closedOnce sync.Once
}

// txn is one accepted push.
type txn struct {
	merchantID, checkoutID string
	phone, callbackURL     string
	amount                 int64
	resultCode, resultDesc string
	noCallback             bool
	final                  bool
	queries                int
	timer                  *time.Timer
}

// NewServer starts a server; Close stops it.
func NewServer(o Options) (*Server, error) {
	if o.ConsumerKey == "" {
		o.ConsumerKey = DefaultConsumerKey
	}
	if o.ConsumerSecret == "" {
		o.ConsumerSecret = DefaultConsumerSecret
	}
	if o.ShortCode == "" {
		o.ShortCode = DefaultShortCode
	}
	if o.PassKey == "" {
		o.PassKey = DefaultPassKey
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	switch {
	case o.CallbackDelay == 0:
		o.CallbackDelay = DefaultCallbackDelay
	case o.CallbackDelay < 0:
		o.CallbackDelay = 0
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = DefaultTokenTTL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	hc := o.CallbackClient
	if hc == nil {
		hc = &http.Client{Timeout: callbackTimeout}
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("darajatest: listen: %w", err)
	}
	ctx, abort := context.WithCancel(context.Background())
	s := &Server{
		opts:    o,
		log:     o.Logger,
		ln:      ln,
		url:     "http://" + ln.Addr().String(),
		hc:      hc,
		stop:    make(chan struct{}),
		ctx:     ctx,
		abort:   abort,
		changed: make(chan struct{}),
		tokens:  map[string]time.Time{},
		scripts: map[string]*scriptState{},
		txns:    map[string]*txn{},
		open:    map[string]*txn{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+daraja.PathOAuth, s.handleOAuth)
	mux.HandleFunc("POST "+daraja.PathPush, s.handlePush)
	mux.HandleFunc("POST "+daraja.PathQuery, s.handleQuery)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, envelope{RequestID: newRequestID(), ErrorCode: "404.001.01", ErrorMessage: "Resource not found"})
	})
	s.srv = &http.Server{
		Handler:           s.track(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the base URL to give the client (daraja.Config.BaseURL).
func (s *Server) URL() string { return s.url }

// ShortCode is the BusinessShortCode the server expects.
func (s *Server) ShortCode() string { return s.opts.ShortCode }

// Close stops the server: open connections are closed, pending outcomes
// are dropped (no callback is sent after Close), callbacks in flight are
// aborted, and Close returns once every goroutine of the server has ended.
func (s *Server) Close() error {
	s.closedOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.stop)
		s.abort()
		for _, t := range s.txns {
			if t.timer != nil && t.timer.Stop() {
				s.wg.Done() // its function will never run
				s.pending--
			}
		}
		s.notifyLocked()
		s.mu.Unlock()
		s.closeErr = s.srv.Close()
		s.wg.Wait()
		if s.opts.CallbackClient == nil {
			s.hc.CloseIdleConnections()
		}
	})
	return s.closeErr
}

// track counts each request in s.wg so Close can wait for handlers, and
// turns requests away once the server is closing.
func (s *Server) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			http.Error(w, "closing", http.StatusServiceUnavailable)
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		defer s.wg.Done()
		h.ServeHTTP(w, r)
	})
}

// ExpireTokens makes every token issued so far invalid, as if its hour had
// passed: the next push or query with it gets 404.001.03.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// The kinds of FailOAuth: how the token endpoint, or what stands in front
// of it, fails.
const (
	// OAuthEmpty400: 400 with an empty body, as after the consumer secret
	// was rotated.
	OAuthEmpty400 = "empty-400"
	// OAuthHTML403: 403 with a web application firewall's HTML page.
	OAuthHTML403 = "html-403"
	// OAuthServiceUnavailable: 503 with the gateway's HTML page.
	OAuthServiceUnavailable = "service-unavailable"
)

// CheckOAuthFault reports whether kind is one of FailOAuth's kinds.
func CheckOAuthFault(kind string) error {
	switch kind {
	case OAuthEmpty400, OAuthHTML403, OAuthServiceUnavailable:
		return nil
	}
	return fmt.Errorf("darajatest: unknown OAuth fault %q (want %s, %s or %s)", kind, OAuthEmpty400, OAuthHTML403, OAuthServiceUnavailable)
}

// FailOAuth makes the next n token requests fail in the way kind names
// (OAuthEmpty400, OAuthHTML403, OAuthServiceUnavailable), whatever their
// credentials; it replaces an earlier FailOAuth, and n <= 0 ends it. It
// panics on an unknown kind (see CheckOAuthFault).
func (s *Server) FailOAuth(n int, kind string) {
	if err := CheckOAuthFault(kind); err != nil {
		panic(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oauthFault, s.oauthFails = kind, max(n, 0)
}

// TokenRequests is how many requests the token endpoint has received,
// failed ones included.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenReqs
}

func (s *Server) handleOAuth(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.tokenReqs++
	fault := ""
	if s.oauthFails > 0 {
		s.oauthFails--
		fault = s.oauthFault
	}
	s.notifyLocked()
	s.mu.Unlock()
	switch fault {
	case OAuthEmpty400:
		w.WriteHeader(http.StatusBadRequest)
	case OAuthHTML403:
		writeHTML(w, http.StatusForbidden, firewallPage)
	case OAuthServiceUnavailable:
		writeHTML(w, http.StatusServiceUnavailable, serviceUnavailablePage)
	}
	if fault != "" {
		s.log.Info("oauth failed as scripted", "fault", fault)
		return
	}
	if r.URL.Query().Get("grant_type") != "client_credentials" {
		writeJSON(w, http.StatusBadRequest, envelope{RequestID: newRequestID(), ErrorCode: "400.008.02", ErrorMessage: "Invalid grant type passed"})
		return
	}
	key, secret, ok := r.BasicAuth()
	if !ok || !equal(key, s.opts.ConsumerKey) || !equal(secret, s.opts.ConsumerSecret) {
		s.log.Info("oauth refused: bad credentials")
		writeJSON(w, http.StatusBadRequest, envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeInvalidCredentials, ErrorMessage: "Invalid Authentication passed"})
		return
	}
	tok := randomString(tokenAlphabet, 28)
	now := time.Now()
	s.mu.Lock()
	for t, exp := range s.tokens {
		if !now.Before(exp) {
			delete(s.tokens, t)
		}
	}
	s.tokens[tok] = now.Add(s.opts.TokenTTL)
	s.mu.Unlock()
	secs := int64((s.opts.TokenTTL + time.Second - 1) / time.Second)
	writeJSON(w, http.StatusOK, map[string]string{"access_token": tok, "expires_in": strconv.FormatInt(secs, 10)})
}

// authorized checks the Bearer token; on failure it has answered.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	const prefix = "Bearer "
	h := r.Header.Get("Authorization")
	ok := false
	if len(h) > len(prefix) && h[:len(prefix)] == prefix {
		s.mu.Lock()
		exp, found := s.tokens[h[len(prefix):]]
		s.mu.Unlock()
		ok = found && time.Now().Before(exp)
	}
	if !ok {
		writeJSON(w, http.StatusNotFound, envelope{RequestID: newRequestID(), ErrorCode: daraja.CodeInvalidToken, ErrorMessage: "Invalid Access Token"})
	}
	return ok
}

// envelope is Daraja's error answer.
type envelope struct {
	RequestID    string `json:"requestId"`
	ErrorCode    string `json:"errorCode"`
	ErrorMessage string `json:"errorMessage"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// readBody reads at most 64 KiB, Daraja's requests being a few hundred bytes.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
	if err != nil {
		return nil, err
	}
	if len(b) > 64<<10 {
		return nil, errors.New("body too large")
	}
	return b, nil
}

const (
	tokenAlphabet   = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	receiptAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	hexAlphabet     = "0123456789abcdef"
)

func randomString(alphabet string, n int) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic("darajatest: crypto/rand: " + err.Error())
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
}

func newRequestID() string {
	return randomString(hexAlphabet, 4) + "-" + randomString(hexAlphabet, 4) + "-" + randomString(hexAlphabet, 20)
}

// newMerchantRequestID looks like Daraja's: 2654-4b64-97ff-b827b542881d3130.
func newMerchantRequestID() string {
	return randomString(hexAlphabet, 4) + "-" + randomString(hexAlphabet, 4) + "-" +
		randomString(hexAlphabet, 4) + "-" + randomString(hexAlphabet, 16)
}

// newCheckoutRequestID looks like Daraja's: ws_CO_ + ddmmyyyyHHMMSS + digits.
func (s *Server) newCheckoutRequestIDLocked(now time.Time) string {
	s.seq++
	return "ws_CO_" + now.In(daraja.Nairobi()).Format("02012006150405") +
		fmt.Sprintf("%06d", s.seq%1000000) + randomString("0123456789", 5)
}

// newReceipt looks like an M-Pesa receipt: ten capitals and digits.
func newReceipt() string {
	return randomString("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 1) + randomString(receiptAlphabet, 9)
}

// notifyLocked wakes the waiters; s.mu is held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}
