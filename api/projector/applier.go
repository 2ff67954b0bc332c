package projector

// The applier: batches applied side by side, up to inFlight, none beside
// another that writes the same payment, CheckoutRequestID or receipt.

import (
	"context"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
)

// inFlight is how many batches are applied side by side: while one
// commits (an fsync), the next is gathered, decoded and written. Only
// batches that share no payment, CheckoutRequestID or receipt go side by
// side (applier.start): they write different rows and different unique
// keys, so the order they commit in changes nothing; a batch that shares
// one with a batch under way waits for it, so that every payment's events
// are applied in stream order as by one batch after the other.
const inFlight = 4

// applier applies batches, up to inFlight at once. Only consume's
// goroutine starts batches.
type applier struct {
	// handle applies and settles a batch (projector.handle), or returns
	// what a stop leaves of it to hand back; told that a batch before it
	// sharing a key is handed back, it returns the whole batch unapplied.
	handle func(ctx context.Context, items []item, afterHandBack bool) (back []item)
	ctx    context.Context
	slots  chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	flights map[*flight]bool // the batches under way
	// handedBack is the keys of every batch handed back so far: a later
	// batch writing one of them is handed back too.
	handedBack map[batchKey]bool
	// back is the messages to hand back (takeBack).
	back []jetstream.Msg
}

// flight is a batch under way: what it writes (batchKeys), set before
// ready is closed, and done, closed once it is settled.
type flight struct {
	keys  map[batchKey]bool
	ready chan struct{}
	done  chan struct{}
}

func (p *projector) newApplier(ctx context.Context) *applier {
	return &applier{handle: p.handle, ctx: ctx, slots: make(chan struct{}, inFlight), flights: map[*flight]bool{}}
}

// start applies the batch prepare gives (its messages decoded) beside the
// batches under way, once fewer than inFlight are. prepare runs in the
// batch's own goroutine, not the caller's, so that the next batch is
// gathered while this one is decoded. Once its keys are known (a payment,
// a CheckoutRequestID, a receipt), the batch waits for every batch started
// before it that shares one to be settled: those came first in the
// stream, and are applied first. If a batch started before it that shares
// one was handed back (a stop during a failure), under way or settled
// already, this batch is handed back too, not applied: applied, it would
// overtake the events handed back (the first completion applied decides a
// payment's outcome).
func (a *applier) start(prepare func() []item) {
	a.slots <- struct{}{}
	f := &flight{ready: make(chan struct{}), done: make(chan struct{})}
	// Only this goroutine starts batches: earlier is every batch started
	// before this one and not yet settled.
	a.mu.Lock()
	earlier := make([]*flight, 0, len(a.flights))
	for g := range a.flights {
		earlier = append(earlier, g)
	}
	a.flights[f] = true
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		var back []item
		defer func() {
			// In one step with leaving flights: a batch started later
			// either waits for this one or finds its keys handed back.
			a.mu.Lock()
			for _, it := range back {
				a.back = append(a.back, it.msg)
			}
			if len(back) > 0 {
				if a.handedBack == nil {
					a.handedBack = map[batchKey]bool{}
				}
				for k := range f.keys {
					a.handedBack[k] = true
				}
			}
			delete(a.flights, f)
			a.mu.Unlock()
			close(f.done)
			<-a.slots
		}()
		items := prepare()
		f.keys = batchKeys(items)
		close(f.ready)
		for _, g := range a.sharing(earlier, f.keys) {
			<-g.done
		}
		if len(items) > 0 {
			back = a.handle(a.ctx, items, a.afterHandBack(f.keys))
		}
	}()
}

// sharing is the batches of earlier that share one of keys, once each has
// its keys.
func (a *applier) sharing(earlier []*flight, keys map[batchKey]bool) []*flight {
	var out []*flight
	for _, g := range earlier {
		<-g.ready
		if g.shares(keys) {
			out = append(out, g)
		}
	}
	return out
}

// afterHandBack reports whether a batch handed back wrote one of keys.
func (a *applier) afterHandBack(keys map[batchKey]bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.handedBack) == 0 {
		return false // the projector is not stopping: the rule
	}
	for k := range keys {
		if a.handedBack[k] {
			return true
		}
	}
	return false
}

// wait returns once every batch started is settled.
func (a *applier) wait() { a.wg.Wait() }

// takeBack returns the messages of the batches settled so far that are to
// be handed back, and forgets them.
func (a *applier) takeBack() []jetstream.Msg {
	a.mu.Lock()
	defer a.mu.Unlock()
	back := a.back
	a.back = nil
	return back
}

func (f *flight) shares(keys map[batchKey]bool) bool {
	small, big := f.keys, keys
	if len(small) > len(big) {
		small, big = big, small
	}
	for k := range small {
		if big[k] {
			return true
		}
	}
	return false
}

// batchKeys are the rows and unique keys a batch may write: its tracking
// ids (as store.Apply writes them), CheckoutRequestIDs and receipts as
// store.Apply writes them (cleaned: store.Normalize) and the read model's
// unique indexes compare them (a receipt in upper case). A key taken as
// sent, uncleaned, would let two batches that write one CheckoutRequestID
// go side by side, and the later in the stream could take it first.
func batchKeys(items []item) map[batchKey]bool {
	keys := make(map[batchKey]bool, len(items))
	for _, it := range items {
		ev := it.ev
		keys[batchKey{'t', store.Canonical(ev.Base().TrackingID)}] = true
		var co, receipt string
		switch e := ev.(type) {
		case events.Dispatched:
			co = e.CheckoutRequestID
		case events.Completed:
			co, receipt = e.CheckoutRequestID, e.Receipt
		case events.LateResult:
			co, receipt = e.CheckoutRequestID, e.Receipt
		}
		// As store.Normalize cleans them (its cleanWord).
		if co = events.CleanText(co, 0); co != "" {
			keys[batchKey{'c', co}] = true
		}
		if receipt = events.CleanText(receipt, 0); receipt != "" {
			keys[batchKey{'r', strings.ToUpper(receipt)}] = true
		}
	}
	return keys
}

// batchKey is a key of batchKeys: a tracking id ('t'), a
// CheckoutRequestID ('c') or a receipt ('r').
type batchKey struct {
	kind byte
	text string
}
