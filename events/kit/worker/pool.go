package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/events/kit/metrics"
)

// Pool consumes a pull consumer with a fixed number of handlers: the one
// consume loop of every stkgate worker (the dispatcher's requests and phone
// releases, the reconciler's timers, callback-ingest's applier).
//
// It pulls messages only for free handlers (Fetch of the free count, never
// ahead): a message fetched ahead of a handler would age in a buffer past
// its AckWait, be delivered again to another instance while the first copy
// still waits, and both would act on it. This is why the Pool does not use
// nats.go's Consume or Messages, which keep a buffer of pulled messages
// (PullMaxMessages, 500 by default) whatever the handlers can take; their
// Drain ends a stop cleanly but cannot give back what the buffer holds
// before the AckWait. A message fetched as the Pool stops is handed back at
// once (HandBack) instead.
//
// A Pool's zero fields take the defaults below; Concurrency below 1 is 1.
type Pool struct {
	// Name names the consumer in log lines.
	Name string
	// Concurrency is how many messages are handled at once.
	Concurrency int
	// FetchWait is how long one pull waits for messages (DefaultFetchWait);
	// a stop waits for the last pull's end, so it is also how long a stop
	// may take beyond the handlers'.
	FetchWait time.Duration
	// ProgressEvery: while a handler runs, its message is reported in
	// progress this often, so that its AckWait bounds only a handler that
	// stopped answering. 0: never.
	ProgressEvery time.Duration
	// ShutdownTimeout is how long Run waits, once stop has ended, for the
	// handlers still running before it ends their work context
	// (DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// Recreate, when set, is called when the consumer is found deleted: it
	// creates it again (it is retried, with waits from 1 s to 30 s, until it
	// succeeds or stop ends). Without it, a deleted consumer is pulled again
	// after a wait, as after any failed pull.
	Recreate func(context.Context) (jetstream.Consumer, error)
	Log      *slog.Logger
	// Metrics counts the messages handled by how they were settled; nil:
	// not counted.
	Metrics *metrics.Registry
	// Tracer, when set, runs each handler in a consumer span, the child of
	// the span that published the message (traceHandle); nil is off.
	Tracer trace.Tracer
}

// Handler handles one message and settles it (Ack, Nak, Term). stop ends
// when the Pool stops taking messages: a handler that has not begun what it
// cannot leave half-done should hand the message back (HandBack) rather
// than begin. work ends only ShutdownTimeout later: a handler in the middle
// of something gets that long to finish it and record its outcome.
type Handler func(stop, work context.Context, msg jetstream.Msg)

// Pool defaults.
const (
	// DefaultFetchWait: an idle Pool asks for messages every 2 s (a pull
	// request, a few hundred bytes), and a stop takes at most that long.
	DefaultFetchWait       = 2 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	// fetchRetryWait is the wait after a failed pull.
	fetchRetryWait = time.Second
)

// Run consumes cons until stop ends, then waits for its last pull to end
// (at most FetchWait) and for the running handlers (see ShutdownTimeout),
// and returns.
func (p Pool) Run(stop context.Context, cons jetstream.Consumer, h Handler) {
	p = p.withDefaults()
	work, cancelWork := context.WithCancel(context.WithoutCancel(stop))
	defer cancelWork()

	slots := make(chan struct{}, p.Concurrency)
	var running sync.WaitGroup
	for stop.Err() == nil {
		n := p.reserve(stop, slots)
		if n == 0 {
			break
		}
		got, err := p.fetch(stop, cons, n, func(msg jetstream.Msg) {
			running.Go(func() {
				defer func() { <-slots }()
				p.handle(stop, work, msg, h)
			})
		})
		for range n - got {
			<-slots
		}
		if err == nil || stop.Err() != nil {
			continue
		}
		if p.Recreate != nil && pullFoundNoConsumer(stop, cons, err) {
			if cons = p.recreate(stop); cons == nil {
				break
			}
			continue
		}
		p.Log.Warn("fetch failed; retrying", "consumer", p.Name, "error", err, "retry_in", fetchRetryWait.String())
		Sleep(stop, fetchRetryWait)
	}
	p.drain(&running, cancelWork)
}

func (p Pool) withDefaults() Pool {
	p.Concurrency = max(p.Concurrency, 1)
	if p.FetchWait <= 0 {
		p.FetchWait = DefaultFetchWait
	}
	if p.ShutdownTimeout <= 0 {
		p.ShutdownTimeout = DefaultShutdownTimeout
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	return p
}

// reserve waits for one free handler slot and takes every other free one:
// the number of messages to pull (0 once stop has ended).
func (p Pool) reserve(stop context.Context, slots chan struct{}) int {
	select {
	case slots <- struct{}{}:
	case <-stop.Done():
		return 0
	}
	n := 1
	for n < p.Concurrency {
		select {
		case slots <- struct{}{}:
			n++
		default:
			return n
		}
	}
	return n
}

// fetch pulls up to n messages, handing each to start as it arrives. A
// pull that found nothing is no error.
//
// The pull is bounded by FetchMaxWait, not by a context: with
// FetchContext, nats.go gives up a tenth of the wait (at most a second)
// after it asked the server to stop, and drops what arrives then, and a
// message the server sent at its end of the pull stays delivered to nobody
// until its AckWait (seen under load: a payment pushed only after the
// dispatcher's AckWait). With FetchMaxWait the server ends the pull (a 408)
// and the client waits a second longer for it.
//
// A pull cannot be cancelled: at a stop, fetch waits for the pull's end
// (at most FetchWait) and hands back what it still gets, delayed past that
// end (handed back sooner, as HandBack does, it would come back to this
// same pull). Returning at once would leave the pull open at the server
// after Run returned, taking messages for a Pool no longer there: handed
// back late, out of order, or, once the service closed its connection,
// left to their AckWait.
func (p Pool) fetch(stop context.Context, cons jetstream.Consumer, n int, start func(jetstream.Msg)) (int, error) {
	pullEnds := time.Now().Add(p.FetchWait)
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(p.FetchWait))
	if err != nil {
		return 0, err
	}
	msgs := batch.Messages()
	got := 0
	for {
		select {
		case msg, ok := <-msgs:
			if !ok {
				if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
					return got, err
				}
				return got, nil
			}
			got++
			start(msg)
		case <-stop.Done():
			for msg := range msgs {
				if err := msg.NakWithDelay(time.Until(pullEnds) + HandBackDelay); err != nil {
					p.Log.Warn("hand back on stop failed: the message comes back after its ack wait", "consumer", p.Name, "error", err)
				}
			}
			return got, nil
		}
	}
}

// handle runs h on msg, reporting progress meanwhile; a message that
// arrived as the Pool stopped is handed back instead.
func (p Pool) handle(stop, work context.Context, msg jetstream.Msg, h Handler) {
	if stop.Err() != nil {
		if err := HandBack(msg); err != nil {
			p.Log.Warn("hand back on stop failed: the message comes back after its ack wait", "consumer", p.Name, "error", err)
		}
		return
	}
	if p.ProgressEvery > 0 {
		var stopReports func()
		msg, stopReports = KeepInProgress(msg, p.ProgressEvery)
		defer stopReports()
	}
	msg, counted := p.Metrics.Consume(p.Name, msg)
	defer counted()
	stop, work, end := p.traceHandle(stop, work, msg)
	defer end()
	h(stop, work, msg)
}

// drain waits for the running handlers for up to ShutdownTimeout, then
// ends their work context and waits for them to return.
func (p Pool) drain(running *sync.WaitGroup, cancelWork context.CancelFunc) {
	done := make(chan struct{})
	go func() {
		running.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(p.ShutdownTimeout):
		p.Log.Warn("handlers still running at the shutdown timeout; cancelling their work", "consumer", p.Name, "timeout", p.ShutdownTimeout.String())
		cancelWork()
		<-done
	}
}

// recreate creates the deleted consumer again, retrying until it succeeds
// or stop ends (then nil).
func (p Pool) recreate(stop context.Context) jetstream.Consumer {
	wait := time.Second
	for {
		cctx, cancel := context.WithTimeout(stop, 10*time.Second)
		c, err := p.Recreate(cctx)
		cancel()
		if err == nil {
			p.Log.Warn("consumer was deleted: created again", "consumer", p.Name)
			return c
		}
		if stop.Err() != nil {
			return nil
		}
		p.Log.Warn("consumer deleted and not created again yet; retrying", "consumer", p.Name, "error", err, "retry_in", wait.String())
		if !Sleep(stop, wait) {
			return nil
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// ConsumerGone reports whether err says the consumer no longer exists.
func ConsumerGone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound)
}

// pullFoundNoConsumer reports whether a failed pull means the consumer no
// longer exists. A consumer deleted while no pull request was waiting sends
// no "deleted" notice: the next pull finds no responder, which a server
// whose JetStream is not ready yet answers too, so the consumer's info
// tells the two apart.
func pullFoundNoConsumer(ctx context.Context, cons jetstream.Consumer, err error) bool {
	if ConsumerGone(err) {
		return true
	}
	if !errors.Is(err, nats.ErrNoResponders) {
		return false
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = cons.Info(ictx)
	return errors.Is(err, jetstream.ErrConsumerNotFound)
}

// HandBackDelay is how long a handed-back message waits before JetStream
// delivers it again (see HandBack): longer than a stopping service takes to
// end its fetch, far shorter than an AckWait.
const HandBackDelay = time.Second

// HandBack returns a message a stopping service took but will not handle, so
// that another instance gets it within HandBackDelay instead of after the
// AckWait.
//
// A plain Nak is not enough: nats-server delivers a nak'd message at once to
// the first pull request still waiting, which at a stop is often the
// stopping service's own (its fetch is ending, its inbox not yet
// unsubscribed); the message is then lost until the AckWait. After a short
// delay that pull request has lapsed — the server drops a pull request whose
// inbox no one listens to — and the message goes to a live consumer. (A
// Pool's pull lives on after its stop until its FetchWait ends: what that
// pull still gets, the Pool hands back past its end itself.)
//
// Only for a consumer without BackOff: with one, nats-server measures a
// NakWithDelay against the BackOff interval of the delivery instead of the
// AckWait.
func HandBack(msg jetstream.Msg) error {
	return msg.NakWithDelay(HandBackDelay)
}

// KeepInProgress reports msg in progress every interval until the returned
// stop is called (stop waits for the reporting to end) or the message it
// returns is settled: a nak through it first stops the reports and waits for
// one under way, so that none reaches the server after the nak. nats.go
// checks that a message is unsettled before it sends a report, but not in
// one step with the sending: a report checked before a nak and sent after
// it makes nats-server take the message as in progress again, and
// redeliver it only after its AckWait instead of the nak's delay.
func KeepInProgress(msg jetstream.Msg, every time.Duration) (jetstream.Msg, func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
	return reportedMsg{Msg: msg, stopReports: stop}, stop
}

// reportedMsg is a message kept in progress by KeepInProgress: a nak stops
// the reports before it is sent; an ack or a term stops them once it is
// sent. A report that reaches the server after an ack or a term changes
// nothing there (the message is no longer pending), and an ack that was not
// confirmed (DoubleAck timed out), which the handler may try again (the
// dispatcher does, for up to 18 s), leaves the message the handler's: kept
// in progress meanwhile, it is not delivered to another instance while the
// first still acks it.
type reportedMsg struct {
	jetstream.Msg
	stopReports func()
}

func (m reportedMsg) Ack() error {
	return m.settled(m.Msg.Ack())
}

func (m reportedMsg) DoubleAck(ctx context.Context) error {
	return m.settled(m.Msg.DoubleAck(ctx))
}

func (m reportedMsg) Nak() error {
	m.stopReports()
	return m.Msg.Nak()
}

func (m reportedMsg) NakWithDelay(delay time.Duration) error {
	m.stopReports()
	return m.Msg.NakWithDelay(delay)
}

func (m reportedMsg) Term() error {
	return m.settled(m.Msg.Term())
}

func (m reportedMsg) TermWithReason(reason string) error {
	return m.settled(m.Msg.TermWithReason(reason))
}

// settled stops the reports once an ack or a term (err its result) was
// sent, or found the message settled already.
func (m reportedMsg) settled(err error) error {
	if err == nil || errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		m.stopReports()
	}
	return err
}

// Sleep waits d or until ctx ends; it reports whether the wait was whole.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
