package projector

// The projector's messages: pulled ahead of the batches by pulls of
// bounded life, so that a stop can wait for the last one's end and leave
// nothing to the AckWait.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events/kit/worker"
)

// fetchWait is how long one pull waits for messages: an idle projector
// asks for messages this often, and a stop waits at most this long for its
// last pull to end.
const fetchWait = worker.DefaultFetchWait

// errFetchEnded is what next returns once the fetcher has ended without
// an error of its own: it was stopped.
var errFetchEnded = errors.New("fetching ended")

// fetcher pulls the consumer's messages ahead of the batches, up to size
// of them received and not yet taken (next), in pulls that end at the
// server (jetstream.FetchMaxWait): each ends with its last message or
// with the server's timeout, so once a pull is over, no message is on its
// way to it.
//
// It is not nats.go's Messages iterator, which the projector used before:
// the iterator's pull requests live on at the server after its Stop or
// Drain, and the messages the server sent them as the iterator
// unsubscribed reached no one; JetStream counted them delivered and sent
// them again only after the AckWait (30 s), so the read model lagged that
// long after a stop mid-stream (TestRunStopLeavesNothingToTheAckWait). Nor
// could it give back the messages still in its buffer.
type fetcher struct {
	cons jetstream.Consumer
	size int
	// free holds a token for each message the fetcher may still ask for:
	// a pull takes as many as it asks for and gives back those it did not
	// get; next gives one back for each message it takes. msgs never holds
	// more than size, so the fetcher never waits to put one in.
	free chan struct{}
	msgs chan jetstream.Msg // closed once the fetcher has ended
	err  error              // why it ended; read once msgs is closed
}

// startFetching pulls messages until stop ends or a pull fails; then it
// waits for the pull under way to end, and closes msgs.
func startFetching(stop context.Context, cons jetstream.Consumer, size int) *fetcher {
	f := &fetcher{cons: cons, size: size, free: make(chan struct{}, size), msgs: make(chan jetstream.Msg, size)}
	for range size {
		f.free <- struct{}{}
	}
	go func() {
		defer close(f.msgs)
		f.err = f.run(stop)
	}()
	return f
}

func (f *fetcher) run(stop context.Context) error {
	for {
		n := f.reserve(stop)
		if n == 0 || stop.Err() != nil {
			return nil
		}
		got, err := f.pull(n)
		for range n - got {
			f.free <- struct{}{}
		}
		if err != nil {
			return err
		}
	}
}

// reserve takes the tokens of the next pull: at least half of size (or
// all there are once stop ends, none), so that a full buffer is not
// topped up a message at a time.
func (f *fetcher) reserve(stop context.Context) int {
	n := 0
	for n < max(f.size/2, 1) {
		select {
		case <-f.free:
			n++
		case <-stop.Done():
			for range n {
				f.free <- struct{}{}
			}
			return 0
		}
	}
	for {
		select {
		case <-f.free:
			n++
		default:
			return n
		}
	}
}

// pull asks for n messages and passes on those that come, until the pull
// ends; it is never cut short, even by a stop, so that nothing is sent to
// it once it returns.
func (f *fetcher) pull(n int) (int, error) {
	batch, err := f.cons.Fetch(n, jetstream.FetchMaxWait(fetchWait))
	if err != nil {
		return 0, fmt.Errorf("pull: %w", err)
	}
	got := 0
	for m := range batch.Messages() {
		f.msgs <- m
		got++
	}
	// A timeout is the pull's normal end; a change of the consumer's
	// leader (a cluster) ends it too, and the next pull goes to the new one.
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrConsumerLeadershipChanged) {
		return got, fmt.Errorf("pull: %w", err)
	}
	return got, nil
}

// next returns the next message received, waiting until ctx ends
// (context.Background: without end) or for at most wait (0: without end);
// it returns the fetcher's error or errFetchEnded once the fetcher has
// ended and every message was taken.
func (f *fetcher) next(ctx context.Context, wait time.Duration) (jetstream.Msg, error) {
	done := ctx.Done()
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case m, ok := <-f.msgs:
		if !ok {
			if f.err != nil {
				return nil, f.err
			}
			return nil, errFetchEnded
		}
		f.free <- struct{}{}
		return m, nil
	case <-done:
		return nil, ctx.Err()
	case <-timeout:
		return nil, nats.ErrTimeout
	}
}

// rest waits for the fetcher's end (its last pull's) and returns the
// messages it received that were not taken.
func (f *fetcher) rest() []jetstream.Msg {
	var out []jetstream.Msg
	for m := range f.msgs {
		out = append(out, m)
	}
	return out
}
