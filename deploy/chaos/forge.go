package main

// Forged callbacks (Options.Forgeries): someone holding a payment's
// CallBackURL posts what Daraja did not say (docs/SECURITY.md, "A forged
// callback", "A forged late result", and the receipt of "A replayed
// callback"). The run holds CALLBACK_SECRET, so it can sign any payment's
// URL; it watches the stream for each push Daraja accepted and each payment
// stkgate ended Unknown, and the fake for the receipts it paid with.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	callback "github.com/stkgate/stkgate/callback-ingest"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/envconf"
)

// forgeryFigures are the forged callbacks callback-ingest answered 200.
type forgeryFigures struct {
	Asked         int // Options.Forgeries
	FastFailures  int // a failure within CALLBACK_FAST_FAILURE of the push
	EarlyFailures int // a failure posted as the push leaves, before Daraja's answer (stk.dispatched)
	ReceiptThefts int // a success for X carrying the receipt the fake paid Y with
	LateFailures  int // a 1032 right after stkgate ended the payment Unknown
	Undelivered   int // forgeries callback-ingest did not answer 200 (down, say)
	// LateTo are the payments a late failure was posted for (answered
	// 200 or not).
	LateTo map[string]bool
}

// forger sends the forgeries while the run goes on.
type forger struct {
	n          int
	cbBase     string
	controlURL string
	secrets    events.CallbackSecrets
	logf       func(string, ...any)
	client     *http.Client
	wg         sync.WaitGroup

	mu       sync.Mutex
	rng      *rand.Rand
	p        float64              // chance that an accepted push is forged upon
	fig      forgeryFigures       // counts sent (answered 200)
	tried    forgeryFigures       // counts decided, to cap each kind at its share
	receipts []paidReceipt        // the fake's successes delivered so far
	checkout map[string]string    // tracking id → its push's CheckoutRequestID (the stream's, else the fake's)
	merchant map[string]string    // tracking id → its push's MerchantRequestID
	forged   map[string]bool      // payments forged upon at their push
	requests map[string]time.Time // tracking id → when its request was accepted
	pushedAt map[string]time.Time // tracking id → when its last push left (its STK_PUSHES entry)
	lateSent map[string]struct{}  // payments sent a late failure
	// stopped: the run is over; a handler nats.go still runs after
	// Close starts no forgery (nor logs one, after Run has returned).
	stopped bool
	// fastFailure is the stack's CALLBACK_FAST_FAILURE; fastWindow, three
	// quarters of it, is how soon after its push a forged fast failure is
	// posted at the latest (a margin for the post to arrive).
	fastFailure, fastWindow time.Duration
}

// begin counts a forgery's goroutine in, unless the forger has stopped.
func (f *forger) begin() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	f.wg.Add(1)
	return true
}

// paidReceipt is a receipt the fake paid a payment with.
type paidReceipt struct{ trackingID, receipt string }

// startForger subscribes to the stream's dispatched and completed events
// (core NATS, reconnecting across nats-server's kills: a forgery missed
// while it is down is one fewer, not an error) and polls the fake for
// receipts, until stop.
func (r *runner) startForger(ctx context.Context) (stop func() forgeryFigures, err error) {
	secrets, err := events.ParseCallbackSecrets(r.cbSecret)
	if err != nil {
		return nil, fmt.Errorf("forgeries: %w", err)
	}
	fast, err := fastFailureOf(r.o.ExtraEnv)
	if err != nil {
		return nil, fmt.Errorf("forgeries: %w", err)
	}
	f := &forger{n: r.o.Forgeries, fastFailure: fast, fastWindow: fast * 3 / 4, cbBase: r.cbBase, controlURL: r.controlURL, secrets: secrets, logf: r.logf,
		client: &http.Client{Timeout: 5 * time.Second},
		rng:    rand.New(rand.NewPCG(r.o.Seed^0xf0f0, r.o.Seed)),
		// Half as many again as needed are picked, spread over the run:
		// some pushes' events pass while nats-server is down.
		p:   min(1, 1.5*float64(r.o.Forgeries+r.o.Forgeries/4)/float64(r.o.N)),
		fig: forgeryFigures{Asked: r.o.Forgeries}, checkout: map[string]string{}, merchant: map[string]string{},
		forged: map[string]bool{}, lateSent: map[string]struct{}{}, requests: map[string]time.Time{}, pushedAt: map[string]time.Time{}}
	nc, err := nats.Connect(r.natsURL, nats.Name("stkgate-chaos-forger"), nats.MaxReconnects(-1),
		nats.ReconnectWait(200*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, fmt.Errorf("forgeries: connect: %w", err)
	}
	handle := func(m *nats.Msg) {
		_, ev, err := events.Decode(m.Data)
		if err != nil {
			return
		}
		if f.begin() {
			go func() { defer f.wg.Done(); f.on(ctx, ev) }()
		}
	}
	// The push log's entry is published just before the push leaves: a
	// forgery sent then reaches callback-ingest before stk.dispatched.
	pushed := func(m *nats.Msg) {
		var a events.Attempt
		if json.Unmarshal(m.Data, &a) != nil || a.TrackingID == "" {
			return
		}
		if f.begin() {
			go func() { defer f.wg.Done(); f.onPush(ctx, a) }()
		}
	}
	subs := map[string]nats.MsgHandler{events.TypeRequested + ".>": handle, events.TypeDispatched + ".>": handle,
		events.TypeCompleted + ".>": handle, events.PushLogSubjectAll: pushed}
	for subj, h := range subs {
		if _, err := nc.Subscribe(subj, h); err != nil {
			nc.Close()
			return nil, fmt.Errorf("forgeries: subscribe %s: %w", subj, err)
		}
	}
	pctx, cancel := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() { defer close(polled); f.pollReceipts(pctx) }()
	return func() forgeryFigures {
		cancel()
		<-polled
		f.mu.Lock()
		f.stopped = true
		f.mu.Unlock()
		nc.Close()
		f.wg.Wait()
		f.mu.Lock()
		defer f.mu.Unlock()
		f.fig.LateTo = map[string]bool{}
		for id := range f.lateSent {
			f.fig.LateTo[id] = true
		}
		return f.fig
	}, nil
}

// on forges upon one event: at a push's stk.dispatched a fast failure
// (1037 and 1032 in turn) or, for one in four, a success with a receipt
// the fake paid another payment with; at an Unknown stk.completed a late
// 1032.
func (f *forger) on(ctx context.Context, ev events.Event) {
	switch e := ev.(type) {
	case events.Requested:
		f.mu.Lock()
		f.requests[e.TrackingID] = e.RequestedAt
		f.mu.Unlock()
	case events.Dispatched:
		f.mu.Lock()
		f.checkout[e.TrackingID], f.merchant[e.TrackingID] = e.CheckoutRequestID, e.MerchantRequestID
		// A fast failure is one that reaches callback-ingest within
		// CALLBACK_FAST_FAILURE of the push: the event may come long
		// after it (its publish retried while nats-server was away, every
		// attempt seen here), and a failure that late is a customer's, or
		// a forger's who waited, which docs/SECURITY.md leaves uncovered.
		pushed, known := f.pushedAt[e.TrackingID]
		fastBy := pushed.Add(f.fastWindow)
		if f.forged[e.TrackingID] || !known || time.Until(fastBy) < f.fastWindow/2 || f.rng.Float64() >= f.p {
			f.mu.Unlock()
			return
		}
		f.forged[e.TrackingID] = true
		var cb darajatest.Callback
		kind := &f.tried.FastFailures
		if y, ok := f.stealable(e.TrackingID); ok && f.tried.ReceiptThefts < f.n/4 && f.tried.ReceiptThefts*4 <= f.tried.FastFailures {
			kind = &f.tried.ReceiptThefts
			cb = darajatest.Callback{ResultCode: "0", Amount: e.Amount, Phone: e.Phone, Receipt: y.receipt, TransactionDate: time.Now()}
		} else if f.tried.FastFailures+max(f.tried.EarlyFailures, earlyShare(f.n)) < f.n {
			// A quarter is left to onPush's, which come later in a run
			// (a request that waited): without, a run whose fast ones all
			// came first had none of them (a CI run).
			cb.ResultCode = []string{"1037", "1032"}[f.tried.FastFailures%2]
		} else {
			f.mu.Unlock()
			return
		}
		*kind++
		f.mu.Unlock()
		cb.MerchantRequestID, cb.CheckoutRequestID = e.MerchantRequestID, e.CheckoutRequestID
		by := fastBy
		if cb.ResultCode == "0" {
			by = time.Time{} // held for its receipt, however late
		}
		if !f.send(ctx, e.TrackingID, cb, by, func(fig *forgeryFigures) *int {
			if cb.ResultCode == "0" {
				return &fig.ReceiptThefts
			}
			return &fig.FastFailures
		}) {
			// callback-ingest was down, or too slow to take it in the
			// window: another push gets the forgery, as in onPush.
			f.mu.Lock()
			*kind--
			f.mu.Unlock()
		}
	case events.Completed:
		if _, label := events.Outcome(e.ResultCode); label != events.LabelUnknown {
			return
		}
		f.mu.Lock()
		_, sent := f.lateSent[e.TrackingID]
		if sent || f.tried.LateFailures >= f.n {
			f.mu.Unlock()
			return
		}
		if f.checkout[e.TrackingID] == "" {
			// Its push's ids are not known yet (its answer was lost and
			// pollReceipts has not read them from the fake): a callback
			// without them is refused as unparseable, which tests nothing.
			f.mu.Unlock()
			return
		}
		f.lateSent[e.TrackingID] = struct{}{}
		f.tried.LateFailures++
		cb := darajatest.Callback{MerchantRequestID: f.merchant[e.TrackingID], CheckoutRequestID: f.checkout[e.TrackingID], ResultCode: "1032"}
		f.mu.Unlock()
		f.send(ctx, e.TrackingID, cb, time.Time{}, func(fig *forgeryFigures) *int { return &fig.LateFailures })
	}
}

// onPush forges upon a push as it leaves, for one in four of the fast
// failures: a 1032 (a customer's cancel, which no customer can give before
// the prompt) that reaches callback-ingest while Daraja's answer is on its
// way, with no stk.dispatched to measure its speed from and a
// CheckoutRequestID of its own (there is none to copy yet). Pushes of
// requests that waited CALLBACK_FAST_FAILURE or more (their phone busy, a
// call refused and deferred, a service down) are picked, the first ones: measured from the request, such
// a forgery would look slow enough to be a customer's.
func (f *forger) onPush(ctx context.Context, a events.Attempt) {
	f.mu.Lock()
	f.pushedAt[a.TrackingID] = a.SentAt
	requested, known := f.requests[a.TrackingID]
	if !known || a.SentAt.Sub(requested) < f.fastFailure || f.forged[a.TrackingID] ||
		f.tried.EarlyFailures >= earlyShare(f.n) || f.tried.FastFailures+f.tried.EarlyFailures >= f.n {
		f.mu.Unlock()
		return
	}
	f.forged[a.TrackingID] = true
	f.tried.EarlyFailures++
	f.mu.Unlock()
	cb := darajatest.Callback{ResultCode: "1032", MerchantRequestID: "forged-" + a.TrackingID,
		CheckoutRequestID: "ws_CO_forged_" + a.TrackingID}
	if !f.send(ctx, a.TrackingID, cb, a.SentAt.Add(f.fastWindow), func(fig *forgeryFigures) *int { return &fig.EarlyFailures }) {
		// callback-ingest was down: another push gets the forgery, so
		// that a run does not end with none of this kind tried.
		f.mu.Lock()
		f.tried.EarlyFailures--
		f.mu.Unlock()
	}
}

// stealable picks a receipt the fake paid a payment other than id with;
// f.mu is held.
func (f *forger) stealable(id string) (paidReceipt, bool) {
	for range 5 {
		if len(f.receipts) == 0 {
			break
		}
		if y := f.receipts[f.rng.IntN(len(f.receipts))]; y.trackingID != id {
			return y, true
		}
	}
	return paidReceipt{}, false
}

// earlyShare is how many of n fast failures onPush forges, before Daraja's
// answer.
func earlyShare(n int) int { return max(1, n/4) }

// fastFailureOf is the stack's CALLBACK_FAST_FAILURE (ExtraEnv's, else
// callback-ingest's default), read as callback-ingest reads it but that
// the forgeries need it positive.
func fastFailureOf(env map[string]string) (time.Duration, error) {
	e := envconf.New(func(k string) string { return env[k] })
	d := e.Duration("CALLBACK_FAST_FAILURE", callback.DefaultFastFailure, time.Millisecond, time.Minute)
	return d, e.Err()
}

// send posts cb to trackingID's CallBackURL, with its valid token, trying
// again for a second while callback-ingest is down (a kill), but never
// starting a post after by (zero: no bound); count names the figure a 200
// adds to. It reports whether a 200 came.
func (f *forger) send(ctx context.Context, trackingID string, cb darajatest.Callback, by time.Time, count func(*forgeryFigures) *int) bool {
	body, err := darajatest.CallbackJSON(cb)
	if err != nil {
		f.logf("forgery for %s: %v", trackingID, err)
		return false
	}
	url := events.CallbackURL(f.cbBase, trackingID, f.secrets.Token(trackingID))
	why := "not posted before its deadline"
	for attempt := 0; attempt < 5 && ctx.Err() == nil && (by.IsZero() || time.Now().Before(by)); attempt++ {
		err := f.post(ctx, url, body)
		if err == nil {
			f.mu.Lock()
			*count(&f.fig)++
			f.mu.Unlock()
			return true
		}
		why = err.Error()
		sleep(ctx, 200*time.Millisecond)
	}
	f.logf("forged callback (result %s) for %s not delivered: %s", cb.ResultCode, trackingID, why)
	f.mu.Lock()
	f.fig.Undelivered++
	f.mu.Unlock()
	return false
}

// post posts one forged callback; an answer other than 200 is an error.
func (f *forger) post(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := f.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("answered %d after %v", resp.StatusCode, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// pollReceipts reads the fake's recordings every 2 s: the receipts of the
// successes it delivered (answered 200), and the CheckoutRequestID of pushes whose
// stk.dispatched never came (a lost answer), for a late forgery.
func (f *forger) pollReceipts(ctx context.Context) {
	for ctx.Err() == nil {
		if rec, err := recordings(ctx, f.controlURL); err == nil {
			// Only receipts callback-ingest took (answered 200) have been
			// claimed: stealing one it never saw is the success with the
			// request's amount and phone that docs/SECURITY.md leaves
			// uncovered.
			paid := receiptsOf(rec, true)
			f.mu.Lock()
			f.receipts = f.receipts[:0]
			for receipt, id := range paid {
				f.receipts = append(f.receipts, paidReceipt{trackingID: id, receipt: receipt})
			}
			for _, p := range rec.Pushes {
				if id := trackingIDOf(p.Body.CallBackURL); p.Accepted && id != "" && f.checkout[id] == "" {
					f.checkout[id], f.merchant[id] = p.CheckoutRequestID, p.MerchantRequestID
				}
			}
			f.mu.Unlock()
		}
		sleep(ctx, 2*time.Second)
	}
}

// receiptsOf is every receipt the fake paid with (only those of callbacks
// answered 200 if delivered), upper case as STK_RECEIPTS keys them → the
// tracking id it paid.
func receiptsOf(rec simRecordings, delivered bool) map[string]string {
	out := map[string]string{}
	for _, c := range rec.Callbacks {
		if c.ResultCode != "0" || (delivered && c.StatusCode != http.StatusOK) {
			continue
		}
		if cb, err := callback.ParseCallback(c.Body); err == nil && cb.Receipt != "" {
			out[strings.ToUpper(cb.Receipt)] = trackingIDOf(c.URL)
		}
	}
	return out
}

// disputedHolders are the tracking ids the reconcilers flagged RECEIPT
// DISPUTED (the holder of a receipt another payment's callback named and
// Daraja did not confirm), read from every dispatcher's log.
func disputedHolders(logs string, dispatchers []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, name := range dispatchers {
		file, err := os.Open(filepath.Join(logs, name+".log"))
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(file)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if !bytes.Contains(sc.Bytes(), []byte("RECEIPT DISPUTED")) {
				continue
			}
			var line struct {
				Msg        string `json:"msg"`
				TrackingID string `json:"tracking_id"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && strings.HasPrefix(line.Msg, "RECEIPT DISPUTED") {
				out[line.TrackingID] = true
			}
		}
		err = sc.Err()
		file.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s's log: %w", name, err)
		}
	}
	return out, nil
}
