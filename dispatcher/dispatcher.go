// Package dispatcher is the service that turns each stk.requested event into
// an STK push to Daraja and records what Daraja answered: stk.dispatched when
// the push was accepted, stk.completed when it was refused or could not be
// sent. It retries only what cannot have reached the customer; a push that
// may have prompted the customer is never sent again.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
)

// Source is the CloudEvents source of every event the dispatcher publishes.
const Source = "stkgate/dispatcher"

// TransactionDesc is the description sent with every push; Daraja allows 13
// characters.
const TransactionDesc = "Payment"

// Result codes of stk.completed for a push given up after retries whose last
// error carried no code: an answer from the gateway in front of Daraja with
// only an HTTP status ("http.503"), or none at all. Otherwise the code is the
// client's: Daraja's errorCode or one of the daraja.Code* constants.
const (
	CodeHTTPPrefix  = "http."
	CodeUnreachable = daraja.CodeUnreachable
)

// fetchWait bounds one pull request, so a stop is noticed promptly and a
// message never waits in a client buffer for a free worker.
const fetchWait = 5 * time.Second

// Run consumes stk.requested until ctx is cancelled, then stops taking
// messages, lets the pushes in flight finish (for at most ShutdownTimeout)
// and returns nil. It returns an error only when it cannot start.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	log := cfg.Logger
	if cfg.CallbackBaseURL == "" {
		return errors.New("dispatcher: CallbackBaseURL is required")
	}
	if _, err := parseCallbackBase(cfg.CallbackBaseURL); err != nil {
		return fmt.Errorf("dispatcher: CallbackBaseURL: %w", err)
	}
	warnCallbackBase(log, cfg)

	client, err := daraja.New(cfg.Daraja)
	if err != nil {
		return fmt.Errorf("dispatcher: daraja client: %w", err)
	}

	// A failed attempt is reported every 2 s while NATS is away; say so at
	// most every 30 s.
	var lastUnreachable atomic.Int64
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name("stkgate-dispatcher"),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(c *nats.Conn) {
			log.Info("nats connected", "url", redactURLs(c.ConnectedUrl()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed by us
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			now := time.Now().UnixNano()
			if last := lastUnreachable.Load(); now-last >= int64(30*time.Second) && lastUnreachable.CompareAndSwap(last, now) {
				log.Warn("nats unreachable, retrying", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", redactURLs(c.ConnectedUrl()))
		}),
	)
	if err != nil {
		return fmt.Errorf("dispatcher: connect nats: %w", err)
	}
	defer func() {
		// Flush so the last acks leave before the connection closes.
		if nc.IsConnected() {
			if err := nc.FlushTimeout(5 * time.Second); err != nil {
				log.Warn("nats flush on stop", "error", err)
			}
		}
		nc.Close()
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("dispatcher: jetstream: %w", err)
	}

	stream, cons, err := setUp(ctx, log, js, cfg.StreamReplicas)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	log.Info("dispatcher started", "consumer", events.ConsumerDispatcher, "concurrency", cfg.Concurrency)

	d := &dispatcher{
		cfg:    cfg,
		log:    log,
		client: client,
		stream: stream,
		pub:    &events.Publisher{JS: js, Source: Source},
	}
	d.consume(ctx, cons)
	log.Info("dispatcher stopped")
	return nil
}

// setUp creates the stream and the consumer, retrying while NATS is not
// reachable yet so the services can start in any order.
func setUp(ctx context.Context, log *slog.Logger, js jetstream.JetStream, replicas int) (jetstream.Stream, jetstream.Consumer, error) {
	wait := time.Second
	for {
		stream, cons, err := func() (jetstream.Stream, jetstream.Consumer, error) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			stream, err := events.EnsureStream(ctx, js, replicas)
			if err != nil {
				return nil, nil, err
			}
			cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, events.DispatcherConsumer())
			if err != nil {
				return nil, nil, fmt.Errorf("create consumer %s: %w", events.ConsumerDispatcher, err)
			}
			return stream, cons, nil
		}()
		if err == nil {
			return stream, cons, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if !retryableSetUp(err) {
			return nil, nil, fmt.Errorf("dispatcher: %w", err)
		}
		log.Warn("jetstream not ready, retrying", "error", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// retryableSetUp tells an unreachable server (worth waiting for) from a
// refusal (a configuration clash no wait will fix).
func retryableSetUp(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// JetStream answered; "not enabled" or "temporarily unavailable" may
		// pass while a cluster forms, anything else will not.
		return apiErr.ErrorCode == jetstream.JSErrCodeJetStreamNotEnabled ||
			apiErr.Code == 503
	}
	return true
}

func warnCallbackBase(log *slog.Logger, cfg Config) {
	u, err := url.Parse(cfg.CallbackBaseURL)
	if err != nil {
		return
	}
	if u.Scheme != "https" && strings.HasSuffix(hostOf(cfg.Daraja.BaseURL), "safaricom.co.ke") {
		log.Warn("CALLBACK_BASE_URL is not https: Safaricom expects an https callback URL", "callback_base_url", redactURLs(cfg.CallbackBaseURL))
	}
	if strings.Contains(strings.ToLower(cfg.CallbackBaseURL), "mpesa") {
		log.Warn("CALLBACK_BASE_URL contains \"mpesa\": Daraja is reported to refuse such callback URLs", "callback_base_url", redactURLs(cfg.CallbackBaseURL))
	}
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}

type dispatcher struct {
	cfg    Config
	log    *slog.Logger
	client *daraja.Client
	stream jetstream.Stream
	pub    *events.Publisher
}

// consume pulls messages only for free workers: a message fetched ahead of a
// worker would age in a buffer past the AckWait, be redelivered while the
// first copy still waits, and both copies would push the customer.
func (d *dispatcher) consume(ctx context.Context, cons jetstream.Consumer) {
	// work outlives ctx so that pushes in flight and the publishing of their
	// outcome can finish after a stop; it ends after ShutdownTimeout.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	slots := make(chan struct{}, d.cfg.Concurrency)
	var wg sync.WaitGroup
	for ctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		n := 1
	reserve:
		for n < d.cfg.Concurrency {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break reserve
			}
		}

		got, err := d.fetch(ctx, cons, n, func(msg jetstream.Msg) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				d.handle(ctx, work, msg)
			}()
		})
		for range n - got {
			<-slots
		}
		if err != nil && ctx.Err() == nil {
			d.log.Warn("fetch from jetstream failed, retrying", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}

	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d.cfg.ShutdownTimeout):
		d.log.Warn("pushes still in flight at shutdown timeout; cancelling them", "timeout", d.cfg.ShutdownTimeout.String())
		cancelWork()
		<-done
	}
}

// fetch pulls up to n messages and hands each to start as it arrives.
func (d *dispatcher) fetch(ctx context.Context, cons jetstream.Consumer, n int, start func(jetstream.Msg)) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, fetchWait)
	defer cancel()
	batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		return 0, err
	}
	got := 0
	for msg := range batch.Messages() {
		got++
		start(msg)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return got, err
	}
	return got, nil
}

// handle dispatches one stk.requested. stop ends on shutdown: no new attempt
// starts after it. work ends only after the shutdown timeout: an attempt in
// flight and the publishing of an outcome get that long to finish.
func (d *dispatcher) handle(stop, work context.Context, msg jetstream.Msg) {
	id := events.TrackingIDOf(msg.Subject())
	log := d.log.With("tracking_id", id)

	_, ev, err := events.Decode(msg.Data())
	if err != nil {
		d.terminate(log, msg, err.Error())
		return
	}
	req, ok := ev.(events.Requested)
	if !ok {
		d.terminate(log, msg, fmt.Sprintf("%s on a %s subject", ev.Type(), events.TypeRequested))
		return
	}
	if req.TrackingID != id {
		d.terminate(log, msg, fmt.Sprintf("tracking_id %q does not match the subject", req.TrackingID))
		return
	}
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		// callback-ingest takes callbacks only for canonical UUIDs: a push
		// for any other id could be paid and never completed.
		d.terminate(log, msg, "tracking id is not a canonical UUID")
		return
	}
	log = log.With("phone", events.MaskPhone(req.Phone), "amount", req.Amount)

	if stop.Err() != nil {
		// Fetched as the dispatcher stopped: hand it back untouched.
		if err := msg.Nak(); err != nil {
			log.Warn("nak on stop", "error", err)
		}
		return
	}

	keep := keepInProgress(msg, d.cfg.ProgressInterval)
	defer keep()

	if meta, err := msg.Metadata(); err == nil && meta.NumDelivered > 1 {
		// The dispatcher does not yet record a push before sending it, so it
		// cannot tell whether an earlier delivery reached Daraja; it can only
		// see whether an earlier delivery recorded an outcome (and lost its
		// ack). A redelivery follows a crash, a lost ack or a stop mid-retry.
		log.Warn("request redelivered: an earlier delivery may already have prompted the customer",
			"delivered", meta.NumDelivered)
		decided, err := d.decided(work, id)
		if err != nil {
			log.Error("cannot tell whether the request was already dispatched; retrying later", "error", err)
			if err := msg.NakWithDelay(recheckDelay); err != nil {
				log.Warn("nak", "error", err)
			}
			return
		}
		if decided != "" {
			log.Info("request already dispatched by an earlier delivery: not pushing again", "event", decided)
			d.ack(work, log, msg)
			return
		}
	}

	out := d.push(stop, work, log, msg, req)
	switch out.kind {
	case outcomeAccepted:
		ev := events.Dispatched{
			Payment:             req.Payment,
			MerchantRequestID:   out.resp.MerchantRequestID,
			CheckoutRequestID:   out.resp.CheckoutRequestID,
			ResponseDescription: out.resp.ResponseDescription,
			CustomerMessage:     out.resp.CustomerMessage,
		}
		log = log.With("merchant_request_id", ev.MerchantRequestID, "checkout_request_id", ev.CheckoutRequestID)
		log.Info("push accepted", "attempts", out.attempts)
		if err := d.publish(work, log, msg, ev); err != nil {
			// The customer has been prompted: pushing again could charge them
			// twice, so the request is terminated rather than redelivered, and
			// the callback (whose URL names the tracking id) completes it.
			log.Error("PUSH ACCEPTED BUT stk.dispatched NOT RECORDED: terminating the request so it is not pushed again; the callback completes the payment, or reconcile by checkout_request_id",
				"error", err)
			d.term(log, msg, "push accepted, dispatched event not recorded")
			return
		}
		d.ack(work, log, msg)

	case outcomeRefused, outcomeGaveUp:
		ev := events.Completed{
			Payment:     req.Payment,
			ResultCode:  out.code,
			ResultDesc:  out.desc,
			Source:      events.SourceDispatcher,
			CompletedAt: time.Now().UTC(),
		}
		if out.kind == outcomeRefused {
			log.Warn("push refused by Daraja", "result_code", ev.ResultCode, "result_desc", ev.ResultDesc, "attempts", out.attempts)
		} else {
			log.Warn("push retries given up", "result_code", ev.ResultCode, "result_desc", ev.ResultDesc, "attempts", out.attempts)
		}
		if err := d.publish(work, log, msg, ev); err != nil {
			// No push reached the customer, so a redelivery is safe: leave
			// the request un-acked for JetStream to redeliver.
			log.Error("OUTCOME NOT RECORDED: stk.completed could not be published; leaving the request un-acked for redelivery",
				"error", err, "result_code", ev.ResultCode)
			return
		}
		d.ack(work, log, msg)

	case outcomeAmbiguous:
		// Daraja may have prompted the customer: another push could charge
		// them twice. The callback or a later STK query decides the outcome.
		log.Warn("push outcome unknown: it may have reached the customer; not retrying, waiting for the callback",
			"error", out.err, "attempts", out.attempts)
		d.ack(work, log, msg)

	case outcomeStopped:
		// Stopped between attempts, none of which can have reached the
		// customer: hand the request back for another dispatcher at once.
		log.Info("stopping: request handed back before its next attempt", "attempts", out.attempts, "last_error", out.err)
		if err := msg.Nak(); err != nil {
			log.Warn("nak on stop", "error", err)
		}
	}
}

type outcomeKind int

const (
	outcomeAccepted outcomeKind = iota
	outcomeRefused
	outcomeGaveUp
	outcomeAmbiguous
	outcomeStopped
)

type outcome struct {
	kind     outcomeKind
	resp     daraja.PushResponse
	code     string // result code of stk.completed
	desc     string // result description of stk.completed
	err      error  // the last push error
	attempts int
}

// push sends the push, retrying with backoff only the answers that mean the
// push cannot have reached the customer.
func (d *dispatcher) push(stop, work context.Context, log *slog.Logger, msg jetstream.Msg, req events.Requested) outcome {
	pr := daraja.PushRequest{
		Phone:            req.Phone,
		Amount:           req.Amount,
		AccountReference: req.Reference,
		TransactionDesc:  TransactionDesc,
		CallbackURL:      events.CallbackURL(d.cfg.CallbackBaseURL, req.TrackingID),
	}
	var (
		out  outcome
		last error
	)
	op := func() error {
		_ = msg.InProgress() // best effort: the ticker reports progress too
		out.attempts++
		// The client bounds each round trip (daraja.Config.Timeout).
		resp, err := d.client.Push(work, pr)
		if err == nil {
			out.resp = resp
			return nil
		}
		last = err
		switch kindOf(err) {
		case daraja.KindTransient, daraja.KindLocked:
			return err
		default:
			return backoff.Permanent(err)
		}
	}
	b := &floorBackOff{eb: &backoff.ExponentialBackOff{
		InitialInterval:     d.cfg.RetryInitialInterval,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         30 * time.Second,
		MaxElapsedTime:      d.cfg.RetryMaxElapsed,
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}}
	b.floor = func() time.Duration { return d.minWait(last) }
	notify := func(err error, wait time.Duration) {
		log.Warn("push failed, retrying", "attempt", out.attempts, "retry_in", wait.Round(time.Millisecond).String(), "error", err)
	}
	err := backoff.RetryNotify(op, backoff.WithContext(b, stop), notify)
	out.err = last
	if err == nil {
		out.kind = outcomeAccepted
		return out
	}

	var de *daraja.Error
	hasDE := errors.As(last, &de)
	switch kindOf(last) {
	case daraja.KindRefused:
		out.kind = outcomeRefused
		out.code, out.desc = refusalOf(last)
	case daraja.KindTransient, daraja.KindLocked:
		if stop.Err() != nil || work.Err() != nil {
			out.kind = outcomeStopped
			return out
		}
		out.kind = outcomeGaveUp
		code, msgText := refusalOf(last)
		if code == "" {
			// A gateway page instead of Daraja's envelope: only its status.
			code = CodeUnreachable
			if hasDE && de.HTTPStatus != 0 {
				code = fmt.Sprintf("%s%d", CodeHTTPPrefix, de.HTTPStatus)
			}
		}
		out.code = code
		out.desc = fmt.Sprintf("Gave up after %d attempts: %s", out.attempts, msgText)
	default:
		// KindAmbiguous, and any kind this code does not know: the safe
		// reading is that the customer may have been prompted.
		out.kind = outcomeAmbiguous
	}
	return out
}

// kindOf is daraja.KindOf with a cancelled call resolved: one cancelled
// before the request was written cannot have reached the customer (like a
// transient failure); one cancelled after it may have.
func kindOf(err error) daraja.Kind {
	k := daraja.KindOf(err)
	if k != daraja.KindCanceled {
		return k
	}
	var de *daraja.Error
	if errors.As(err, &de) && !de.RequestSent {
		return daraja.KindTransient
	}
	return daraja.KindAmbiguous
}

// minWait is the least wait before retrying after err: what the client
// advises (Daraja's Retry-After, or its own reading of the error), except that
// after "Unable to lock subscriber" the dispatcher's LockedWait replaces the
// client's default advice: the customer's open prompt must expire first, and
// LockedWait says how long that takes. A Retry-After asking for more wins.
func (d *dispatcher) minWait(err error) time.Duration {
	var de *daraja.Error
	if !errors.As(err, &de) {
		return 0
	}
	if de.Kind != daraja.KindLocked {
		return de.RetryAfter
	}
	if de.RetryAfter > daraja.RetryAfterLocked {
		return max(de.RetryAfter, d.cfg.LockedWait)
	}
	return d.cfg.LockedWait
}

// recheckDelay is how long a redelivered request waits when the stream
// could not be asked whether it was already dispatched.
const recheckDelay = 5 * time.Second

// decided returns the type of an event that shows an earlier delivery of the
// payment's request already got Daraja's answer (stk.dispatched or
// stk.completed), or "" when there is none.
func (d *dispatcher) decided(work context.Context, trackingID string) (string, error) {
	for _, typ := range []string{events.TypeDispatched, events.TypeCompleted} {
		ctx, cancel := context.WithTimeout(work, 5*time.Second)
		_, err := d.stream.GetLastMsgForSubject(ctx, events.Subject(typ, trackingID))
		cancel()
		switch {
		case err == nil:
			return typ, nil
		case errors.Is(err, jetstream.ErrMsgNotFound):
		default:
			return "", fmt.Errorf("look up %s: %w", events.Subject(typ, trackingID), err)
		}
	}
	return "", nil
}

// refusalOf is the result code and description stk.completed carries for a
// push error.
func refusalOf(err error) (code, desc string) {
	var de *daraja.Error
	if errors.As(err, &de) {
		desc = de.Message
		if desc == "" && de.HTTPStatus != 0 {
			desc = fmt.Sprintf("HTTP %d", de.HTTPStatus)
		}
		return de.Code, desc
	}
	return "", err.Error()
}

// floorBackOff is an exponential backoff whose next wait is raised to a
// floor that depends on the last error, within the same elapsed-time budget.
type floorBackOff struct {
	eb    *backoff.ExponentialBackOff
	floor func() time.Duration
}

func (f *floorBackOff) NextBackOff() time.Duration {
	next := f.eb.NextBackOff()
	if next == backoff.Stop {
		return backoff.Stop
	}
	if floor := f.floor(); next < floor {
		if f.eb.MaxElapsedTime > 0 && f.eb.GetElapsedTime()+floor > f.eb.MaxElapsedTime {
			return backoff.Stop
		}
		next = floor
	}
	return next
}

func (f *floorBackOff) Reset() { f.eb.Reset() }

// publish stores ev, retrying until it is durable or work ends: a lost
// outcome is worse than a late one. The request is kept in progress
// meanwhile so JetStream does not redeliver it.
func (d *dispatcher) publish(work context.Context, log *slog.Logger, msg jetstream.Msg, ev events.Event) error {
	eb := backoff.NewExponentialBackOff()
	eb.InitialInterval = 500 * time.Millisecond
	eb.MaxInterval = 10 * time.Second
	eb.MaxElapsedTime = 0
	op := func() error {
		_ = msg.InProgress()
		ctx, cancel := context.WithTimeout(work, 10*time.Second)
		defer cancel()
		_, err := d.pub.Publish(ctx, ev)
		return err
	}
	notify := func(err error, wait time.Duration) {
		log.Error("publish failed, retrying", "event", ev.Type(), "retry_in", wait.Round(time.Millisecond).String(), "error", err)
	}
	if err := backoff.RetryNotify(op, backoff.WithContext(eb, work), notify); err != nil {
		return fmt.Errorf("publish %s: %w", ev.Type(), err)
	}
	return nil
}

// ack acknowledges and waits for JetStream to confirm: a lost ack would
// redeliver the request and push the customer again.
func (d *dispatcher) ack(work context.Context, log *slog.Logger, msg jetstream.Msg) {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-work.Done():
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(work), 5*time.Second)
		err = msg.DoubleAck(ctx)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return
		}
	}
	log.Error("ack not confirmed: the request may be redelivered and pushed again", "error", err)
}

func (d *dispatcher) terminate(log *slog.Logger, msg jetstream.Msg, reason string) {
	log.Error("terminating malformed request", "subject", msg.Subject(), "reason", reason)
	d.term(log, msg, "malformed: "+reason)
}

func (d *dispatcher) term(log *slog.Logger, msg jetstream.Msg, reason string) {
	if err := msg.TermWithReason(reason); err != nil {
		log.Error("terminate failed", "error", err)
	}
}

// keepInProgress reports msg in progress every interval until the returned
// function is called, so JetStream does not redeliver a request whose push
// is being retried or whose outcome is being published.
func keepInProgress(msg jetstream.Msg, every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
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
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
