package projector

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/stkgate/stkgate/events"
)

// fakeApply records the batches applier hands it, by the tracking id of
// their first event, and holds each until it is released.
type fakeApply struct {
	mu      sync.Mutex
	settled map[string]bool
	onBegin func(name string) // called, under mu, as a batch begins
	release map[string]chan struct{}
	began   chan string
}

func newFakeApply() *fakeApply {
	return &fakeApply{settled: map[string]bool{}, release: map[string]chan struct{}{}, began: make(chan string, 16)}
}

func (f *fakeApply) gate(name string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.release[name] == nil {
		f.release[name] = make(chan struct{})
	}
	return f.release[name]
}

func (f *fakeApply) handle(_ context.Context, items []item, _ bool) []item {
	name := items[0].ev.Base().Reference
	f.mu.Lock()
	if f.onBegin != nil {
		f.onBegin(name)
	}
	f.mu.Unlock()
	f.began <- name
	<-f.gate(name)
	f.mu.Lock()
	f.settled[name] = true
	f.mu.Unlock()
	return nil
}

func batchOf(ref string, evs ...events.Event) []item {
	out := make([]item, len(evs))
	for i, ev := range evs {
		switch e := ev.(type) {
		case events.Requested:
			e.Reference = ref
			ev = e
		case events.Completed:
			e.Reference = ref
			ev = e
		}
		out[i] = item{ev: ev}
	}
	return out
}

func completion(id, code, receipt, checkout string) events.Completed {
	return events.Completed{Payment: events.Payment{TrackingID: id}, ResultCode: code, Receipt: receipt, CheckoutRequestID: checkout}
}

// Batches that share nothing are applied side by side; one that shares a
// payment, a CheckoutRequestID or a receipt (in any case) with a batch under
// way waits for it, so that each payment's events are applied in stream
// order.
func TestApplierOrdersBatchesThatShareAKey(t *testing.T) {
	const (
		p1 = "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b01"
		p2 = "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b02"
		p3 = "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b03"
		p4 = "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b04"
	)
	f := newFakeApply()
	a := &applier{handle: f.handle, ctx: context.Background(), slots: make(chan struct{}, inFlight), flights: map[*flight]bool{}}

	a.start(decoded(batchOf("A", completion(p1, "1032", "", "ws_CO_1"))))
	a.start(decoded(batchOf("B", completion(p2, "0", "RCPT2", "ws_CO_2"))))
	if got := []string{<-f.began, <-f.began}; !slices.Contains(got, "A") || !slices.Contains(got, "B") {
		t.Fatalf("batches sharing nothing: started %v, want A and B side by side", got)
	}

	for _, c := range []struct {
		name  string
		batch []item
		want  string // the batch under way it must wait for, "" none
	}{
		{"same payment", batchOf("x", events.Requested{Payment: events.Payment{TrackingID: p1}}), "A"},
		{"same payment, tracking id in upper case", batchOf("x", events.Requested{Payment: events.Payment{TrackingID: "6F1C2A34-0B6E-4D8E-9A51-3C2F1E0D9B02"}}), "B"},
		{"same CheckoutRequestID", batchOf("x", completion(p3, "0", "", "ws_CO_1")), "A"},
		{"same receipt in another case", batchOf("x", completion(p4, "0", "rcpt2", "")), "B"},
		{"nothing shared", batchOf("x", completion(p3, "0", "RCPT3", "ws_CO_3")), ""},
	} {
		got := []string{}
		for _, g := range a.sharing(underWay(a), batchKeys(c.batch)) {
			got = append(got, nameOf(g))
		}
		want := []string{}
		if c.want != "" {
			want = []string{c.want}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: waits for %v, want %v", c.name, got, want)
		}
	}

	// C shares A's payment: it starts only once A is settled, though B
	// settles first and frees a slot.
	go a.start(decoded(batchOf("C", completion(p1, "0", "RCPT1", "ws_CO_1"))))
	close(f.gate("B"))
	var aSettled bool
	f.mu.Lock()
	f.onBegin = func(name string) {
		if name == "C" {
			aSettled = f.settled["A"]
		}
	}
	f.mu.Unlock()
	close(f.gate("A"))
	if name := <-f.began; name != "C" {
		t.Fatalf("started %s, want C", name)
	}
	close(f.gate("C"))
	a.wait()
	if !aSettled {
		t.Errorf("C started before A, which shares its payment, was settled")
	}
}

// A batch still being decoded holds back every later batch until its keys
// are known: one that shares its payment then waits for it to be settled,
// though its own keys were known first. Deciding on the keys known so far
// would apply the later batch first, and a payment's completion before
// its request.
func TestApplierWaitsForTheKeysOfABatchBeingDecoded(t *testing.T) {
	const p1 = "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b01"
	f := newFakeApply()
	a := &applier{handle: f.handle, ctx: context.Background(), slots: make(chan struct{}, inFlight), flights: map[*flight]bool{}}

	decodeA := make(chan struct{})
	a.start(func() []item {
		<-decodeA
		return batchOf("A", events.Requested{Payment: events.Payment{TrackingID: p1}})
	})
	var aSettled bool
	f.mu.Lock()
	f.onBegin = func(name string) {
		if name == "B" {
			aSettled = f.settled["A"]
		}
	}
	f.mu.Unlock()
	a.start(decoded(batchOf("B", completion(p1, "0", "RCPT1", "ws_CO_1"))))
	close(f.gate("B"))
	close(decodeA)
	if name := <-f.began; name != "A" {
		t.Fatalf("started %s first, want A", name)
	}
	close(f.gate("A"))
	if name := <-f.began; name != "B" {
		t.Fatalf("started %s, want B", name)
	}
	a.wait()
	if !aSettled {
		t.Errorf("B started before A, which shares its payment and came first, was settled")
	}
}

// decoded is a batch already decoded, as applier.start takes one.
func decoded(items []item) func() []item { return func() []item { return items } }

// underWay is the batches a has under way.
func underWay(a *applier) []*flight {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*flight
	for g := range a.flights {
		out = append(out, g)
	}
	return out
}

// nameOf is the name of the batch under way g is, for the messages.
func nameOf(g *flight) string {
	for _, k := range []struct {
		key  batchKey
		name string
	}{
		{batchKey{'t', "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b01"}, "A"},
		{batchKey{'t', "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b02"}, "B"},
	} {
		if g.keys[k.key] {
			return k.name
		}
	}
	return "?"
}

// A batch's keys are the values the read model's unique indexes compare:
// store.Apply cleans a CheckoutRequestID or receipt (spaces around it,
// control characters) before writing it, so one sent with them is the
// same key as one sent without. Otherwise a completion naming another
// payment's CheckoutRequestID with a space after it would be applied beside
// that payment's dispatched, and whichever committed first would take it:
// the payment's own dispatched could be refused and its genuine outcome
// applied as invalid.
func TestBatchKeysAreWhatTheReadModelCompares(t *testing.T) {
	const (
		p1 = "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b01"
		p2 = "6f1c2a34-0b6e-4d8e-9a51-3c2f1e0d9b02"
	)
	dispatched := batchKeys([]item{{ev: events.Dispatched{Payment: events.Payment{TrackingID: p1}, CheckoutRequestID: "ws_CO_1"}}})
	paid := batchKeys([]item{{ev: completion(p1, "0", "RCPT1", "")}})
	for _, c := range []struct {
		name  string
		other map[batchKey]bool
		ev    events.Event
	}{
		{"a CheckoutRequestID with a space after it", dispatched, completion(p2, "0", "", "ws_CO_1 ")},
		{"a CheckoutRequestID with a control character in it", dispatched, completion(p2, "0", "", "ws_CO\x00_1")},
		{"a receipt with spaces around it", paid, completion(p2, "0", " rcpt1\t", "")},
	} {
		if !(&flight{keys: c.other}).shares(batchKeys([]item{{ev: c.ev}})) {
			t.Errorf("%s: shares no key with the batch that writes the same", c.name)
		}
	}
}
