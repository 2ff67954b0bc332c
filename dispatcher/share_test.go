package dispatcher

import (
	"testing"
	"time"
)

func TestShares(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	type step struct {
		client string
		force  bool
		put    bool // count out the client's oldest request taken instead
		// want: taken, or handed back for wait.
		taken bool
		wait  time.Duration
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
				{client: "a", wait: time.Second},
			},
		},
		{
			name: "ClientMaxInFlight bounds the share", workers: 8, most: 2,
			steps: []step{
				{client: "a", taken: true}, {client: "a", taken: true},
				{client: "a", wait: time.Second},
			},
		},
		{
			name: "a newcomer always gets a worker, and shrinks the others' share", workers: 8, most: 8,
			steps: []step{
				{client: "a", taken: true}, {client: "a", taken: true}, {client: "a", taken: true}, {client: "a", taken: true},
				{client: "b", taken: true},
				// 8 / (2+1): a has 4 and waits until it is down to 1.
				{client: "a", put: true}, {client: "a", wait: time.Second},
				{client: "b", taken: true},
				{client: "c", taken: true},
			},
		},
		{
			name: "a client's hand-backs come due one spacing apart", workers: 2, most: 2,
			steps: []step{
				{client: "a", taken: true},
				{client: "a", wait: time.Second},
				{client: "a", wait: time.Second + 100*time.Millisecond},
				{client: "a", wait: time.Second + 200*time.Millisecond},
				// Another client's are spaced on their own.
				{client: "b", taken: true},
				{client: "b", wait: time.Second},
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
				{client: "a", taken: true}, {client: "b", taken: true}, {client: "a", wait: time.Second},
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
				done, wait := s.take(st.client, t0, st.force)
				if taken := done != nil; taken != st.taken || wait != st.wait {
					t.Fatalf("step %d (%s): taken %v, wait %v; want taken %v, wait %v", i, st.client, taken, wait, st.taken, st.wait)
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
