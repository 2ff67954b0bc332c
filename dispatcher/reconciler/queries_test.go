package reconciler

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
)

// fakeQueries is queries in front of a counting fake of Daraja's STK query
// answering "still being processed", on a clock the test moves.
type fakeQueries struct {
	*queries
	calls   atomic.Int32
	release chan struct{} // nil: answer at once
	mu      sync.Mutex
	now     time.Time
}

func newFakeQueries() *fakeQueries {
	f := &fakeQueries{now: time.Date(2026, 12, 6, 2, 0, 0, 0, time.UTC)}
	f.queries = newQueries(func(ctx context.Context, _ string) (daraja.QueryResult, error) {
		f.calls.Add(1)
		if f.release != nil {
			select {
			case <-f.release:
			case <-ctx.Done():
				return daraja.QueryResult{}, ctx.Err()
			}
		}
		return daraja.QueryResult{}, daraja.ErrStillProcessing
	}, 5*time.Second, 60*time.Second, f.clock)
	return f
}

func (f *fakeQueries) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeQueries) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// TestQueriesShareOneCall: askers while a query is under way wait for its
// answer, which one call gave them all.
func TestQueriesShareOneCall(t *testing.T) {
	f := newFakeQueries()
	f.release = make(chan struct{})
	var wg sync.WaitGroup
	answers := make([]answer, 20)
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = f.ask(context.Background(), "ws_CO_1", time.Time{})
		}()
	}
	for f.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(f.release)
	wg.Wait()
	if n := f.calls.Load(); n != 1 {
		t.Errorf("%d calls for 20 concurrent askers, want 1", n)
	}
	for i, a := range answers {
		if a.err != daraja.ErrStillProcessing {
			t.Errorf("asker %d got %v", i, a.err)
		}
	}
}

// TestQueriesReuse: an answer is reused until the next interval, which
// doubles with each call up to the longest; an answer asked before
// notBefore is not reused; one whose asker stopped is not either; another
// CheckoutRequestID has its own.
func TestQueriesReuse(t *testing.T) {
	f := newFakeQueries()
	ask := func(id string, notBefore time.Time) { f.ask(context.Background(), id, notBefore) }
	steps := []struct {
		name      string
		advance   time.Duration
		id        string
		notBefore time.Duration // after the start; 0: none
		wantCalls int32
	}{
		{"first", 0, "a", 0, 1},
		{"within the first interval", 4 * time.Second, "a", 0, 1},
		{"after it", time.Second, "a", 0, 2},
		{"within the doubled interval", 9 * time.Second, "a", 0, 2},
		{"another id", 0, "b", 0, 3},
		{"after the doubled interval", time.Second, "a", 0, 4},
		{"an answer asked before notBefore", time.Second, "a", 16 * time.Second, 5},
		{"one asked at notBefore", 0, "a", 16 * time.Second, 5},
	}
	start := f.clock()
	for _, s := range steps {
		f.advance(s.advance)
		var nb time.Time
		if s.notBefore > 0 {
			nb = start.Add(s.notBefore)
		}
		ask(s.id, nb)
		if n := f.calls.Load(); n != s.wantCalls {
			t.Fatalf("%s: %d calls, want %d", s.name, n, s.wantCalls)
		}
	}
	for i := 0; i < 10; i++ {
		f.advance(time.Minute)
		ask("a", time.Time{})
	}
	if a := f.ask(context.Background(), "a", time.Time{}); a.left(f.clock()) != time.Minute {
		t.Errorf("reused for %s after many calls, want the longest interval (1m)", a.left(f.clock()))
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.release = make(chan struct{})
	before := f.calls.Load()
	f.ask(ctx, "c", time.Time{})
	close(f.release)
	f.ask(context.Background(), "c", time.Time{})
	if n := f.calls.Load() - before; n != 2 {
		t.Errorf("%d calls, want 2: the answer of an asker that stopped is not Daraja's", n)
	}
}
