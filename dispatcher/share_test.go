package dispatcher

import (
	"fmt"
	"testing"
	"time"
)

func TestShares(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	type step struct {
		client string
		// phone and id default to the step's own, seq to its number: the
		// steps are requests in the order they were accepted.
		phone, id string
		at        time.Duration // after t0
		force     bool
		put       bool // count out the client's oldest request taken instead
		// want: taken, or handed back for wait, why.
		taken bool
		wait  time.Duration
		why   string
	}
	tests := []struct {
		name    string
		workers int
		most    int
		steps   []step
	}{
		{
			name: "a client alone gets half the workers", workers: 8, most: 8,
			steps: []step{
				{client: "a", taken: true}, {client: "a", taken: true}, {client: "a", taken: true}, {client: "a", taken: true},
				{client: "a", wait: time.Second, why: atShare},
			},
		},
		{
			name: "ClientMaxInFlight bounds the share", workers: 8, most: 2,
			steps: []step{
				{client: "a", taken: true}, {client: "a", taken: true},
				{client: "a", wait: time.Second, why: atShare},
			},
		},
		{
			name: "a newcomer always gets a worker, and shrinks the others' share", workers: 8, most: 8,
			steps: []step{
				{client: "a", taken: true}, {client: "a", taken: true}, {client: "a", taken: true}, {client: "a", taken: true},
				{client: "b", taken: true},
				// 8 / (2+1): a has 4 and waits until it is down to 1.
				{client: "a", put: true}, {client: "a", wait: time.Second, why: atShare},
				{client: "b", taken: true},
				{client: "c", taken: true},
			},
		},
		{
			name: "a client's hand-backs come due one spacing apart", workers: 2, most: 2,
			steps: []step{
				{client: "a", taken: true},
				{client: "a", wait: time.Second, why: atShare},
				{client: "a", wait: time.Second + 100*time.Millisecond, why: atShare},
				{client: "a", wait: time.Second + 200*time.Millisecond, why: atShare},
				// Another client's are spaced on their own.
				{client: "b", taken: true},
				{client: "b", wait: time.Second, why: atShare},
			},
		},
		{
			name: "force takes beyond the share", workers: 2, most: 1,
			steps: []step{
				{client: "a", taken: true},
				{client: "a", force: true, taken: true},
				{client: "a", put: true}, {client: "a", put: true},
				{client: "a", taken: true},
			},
		},
		{
			name: "one worker: each client still gets one", workers: 1, most: 1,
			steps: []step{
				{client: "a", taken: true}, {client: "b", taken: true}, {client: "a", wait: time.Second, why: atShare},
			},
		},
		{
			name: "a later request for a phone waits behind one handed back", workers: 2, most: 1,
			steps: []step{
				{client: "a", taken: true},
				{client: "a", phone: "p", id: "r1", wait: time.Second, why: atShare},
				// a is below its share again, but r1 holds the phone's turn,
				// and so it does for any client.
				{client: "a", put: true},
				{client: "a", phone: "p", id: "r2", wait: time.Second + 100*time.Millisecond, why: behindPhone},
				{client: "b", phone: "p", id: "r3", wait: time.Second + 100*time.Millisecond, why: behindPhone},
				// Other phones go.
				{client: "b", taken: true},
				// r1 comes back and goes; then the phone is free to all.
				{client: "a", phone: "p", id: "r1", at: time.Second, taken: true},
				{client: "c", phone: "p", id: "r2", at: time.Second, taken: true},
			},
		},
		{
			name: "a request handed back holds its phone only so long after it was due", workers: 2, most: 1,
			steps: []step{
				{client: "a", taken: true},
				{client: "a", phone: "p", id: "r1", wait: time.Second, why: atShare},
				{client: "b", phone: "p", id: "r2", at: time.Second + heldBackGrace - time.Millisecond, wait: 100 * time.Millisecond, why: behindPhone},
				{client: "b", phone: "p", id: "r2", at: time.Second + heldBackGrace, taken: true},
			},
		},
		{
			name: "force takes a request behind its phone", workers: 2, most: 1,
			steps: []step{
				{client: "a", taken: true},
				{client: "a", phone: "p", id: "r1", wait: time.Second, why: atShare},
				{client: "b", phone: "p", id: "r2", force: true, taken: true},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newShares(tc.workers, tc.most, time.Second, 100*time.Millisecond)
			held := map[string][]func(){}
			for i, st := range tc.steps {
				if st.put {
					held[st.client][0]()
					held[st.client] = held[st.client][1:]
					continue
				}
				r := ask{client: st.client, phone: st.phone, id: st.id, seq: uint64(i + 1)}
				if r.phone == "" {
					r.phone = fmt.Sprint("phone-", i)
				}
				if r.id == "" {
					r.id = fmt.Sprint("id-", i)
				}
				done, wait, why := s.take(r, t0.Add(st.at), st.force)
				if taken := done != nil; taken != st.taken || wait != st.wait || why != st.why {
					t.Fatalf("step %d (%s %s): taken %v, wait %v, why %q; want taken %v, wait %v, why %q",
						i, st.client, r.id, taken, wait, why, st.taken, st.wait, st.why)
				}
				if done != nil {
					held[st.client] = append(held[st.client], done)
				}
			}
			for _, dones := range held {
				for _, done := range dones {
					done()
					done() // counted out once
				}
			}
			if n := len(s.inFlight); n != 0 {
				t.Errorf("%d clients still counted in flight after every request was done: %v", n, s.inFlight)
			}
		})
	}
}
