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

// With no bound on Daraja (DARAJA_MAX_RPS=0) a client's hand-backs come
// due at twice the pace its requests are done, so that a client at its
// share gets a request back whenever a worker frees: a fixed 10 ms spacing
// let a client whose requests were done 1,000 times a second have its
// handed-back ones back at 100 a second, and a burst of a few thousand
// waited minutes after the workers had gone idle (make bench's end-to-end
// run). A client done slowly keeps the trickle (10 ms at most), and one
// not yet done at all starts there.
func TestHandBacksFollowTheClientsPaceWithoutABudget(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		every time.Duration // between two of the client's requests done
		want  time.Duration // the spacing of its hand-backs then
	}{
		{"done 1000 a second", time.Millisecond, 500 * time.Microsecond},
		{"done 200 a second", 5 * time.Millisecond, 2500 * time.Microsecond},
		{"done 20 a second: the trickle", 50 * time.Millisecond, maxHandBackSpacing},
		{"done 100000 a second: the floor", 10 * time.Microsecond, minHandBackSpacing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newShares(8, 8, time.Second, handBackSpacing(0))
			now := t0
			s.now = func() time.Time { return now }
			seq := uint64(0)
			take := func() (func(), time.Duration) {
				seq++
				done, wait, _ := s.take(ask{client: "a", phone: fmt.Sprint("p", seq), id: fmt.Sprint("r", seq), seq: seq}, now, false)
				return done, wait
			}
			// Before any is done: the trickle.
			var held []func()
			for range 4 {
				done, _ := take()
				held = append(held, done)
			}
			_, w1 := take()
			_, w2 := take()
			if w2-w1 != maxHandBackSpacing {
				t.Fatalf("hand-backs before any request was done: %v apart, want %v", w2-w1, maxHandBackSpacing)
			}
			// A second of requests done at the pace, each freeing a worker
			// another takes.
			for end := now.Add(2 * time.Second); now.Before(end); now = now.Add(tc.every) {
				held[0]()
				done, _ := take()
				if done == nil {
					t.Fatal("a worker freed, but the client's request was handed back")
				}
				held = append(held[1:], done)
			}
			_, w1 = take()
			_, w2 = take()
			if got := w2 - w1; got < tc.want*9/10 || got > tc.want*11/10 {
				t.Errorf("hand-backs %v apart, want %v", got, tc.want)
			}
		})
	}
	// A client fast for a second, then stalled with its requests in
	// flight (Daraja down, its pushes retrying): its hand-backs slow with
	// the stall, to the trickle within seconds, not its last fast pace; and a
	// request behind a handed-back one on its phone comes the trickle
	// after it, whatever the client's pace.
	t.Run("stalled after a fast second", func(t *testing.T) {
		s := newShares(8, 8, time.Second, handBackSpacing(0))
		now := t0
		s.now = func() time.Time { return now }
		seq := uint64(0)
		take := func(phone string) (func(), time.Duration, string) {
			seq++
			if phone == "" {
				phone = fmt.Sprint("p", seq)
			}
			return s.take(ask{client: "a", phone: phone, id: fmt.Sprint("r", seq), seq: seq}, now, false)
		}
		var held []func()
		for range 4 {
			done, _, _ := take("")
			held = append(held, done)
		}
		for end := now.Add(time.Second); now.Before(end); now = now.Add(time.Millisecond) {
			held[0]()
			done, _, _ := take("")
			held = append(held[1:], done)
		}
		_, w1, _ := take("")
		_, w2, _ := take("")
		if w2-w1 != 500*time.Microsecond {
			t.Fatalf("at 1000 done a second: hand-backs %v apart, want 500µs", w2-w1)
		}
		_, w1, _ = take("shared")
		_, w2, why := take("shared")
		if why != behindPhone || w2-w1 != maxHandBackSpacing {
			t.Errorf("behind a request handed back on its phone: %v after it (%s), want %v", w2-w1, why, maxHandBackSpacing)
		}
		now = now.Add(time.Second)
		_, w1, _ = take("")
		_, w2, _ = take("")
		if w2-w1 < 2*time.Millisecond {
			t.Errorf("stalled for 1s: hand-backs %v apart, want them slowed from 500µs", w2-w1)
		}
		now = now.Add(4 * time.Second)
		_, w1, _ = take("")
		_, w2, _ = take("")
		if w2-w1 != maxHandBackSpacing {
			t.Errorf("stalled for 5s: hand-backs %v apart, want the trickle, %v", w2-w1, maxHandBackSpacing)
		}
	})
	// With a budget, its pace: the client's own does not matter.
	if got := handBackSpacing(20); got != 25*time.Millisecond {
		t.Errorf("handBackSpacing(20) = %v, want 25ms", got)
	}
}
