// Package dispatcher is the service that turns each stk.requested event into
// an STK push to Daraja and records what Daraja answered: stk.dispatched when
// the push was accepted, stk.completed when it was refused or could not be
// sent. It retries only what cannot have reached the customer; a push that
// may have prompted the customer is never sent again.
package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/worker"
	"github.com/stkgate/stkgate/events/redact"
)

// Source is the CloudEvents source of every event the dispatcher publishes.
const Source = "stkgate/dispatcher"

// TransactionDesc is the description sent with every push; Daraja allows 13
// characters.
const TransactionDesc = "Payment"

// CodeUnreachable is the result code of stk.completed for a push given up
// after retries whose last error carried no code. The client's errors
// always carry one (Daraja's errorCode, daraja.CodeHTTPPrefix + the status
// of an answer without one, or a daraja.Code* constant), so this is a last
// resort.
const CodeUnreachable = daraja.CodeUnreachable

// CodeRecordLost is the error code of an attempt record written again from
// the push log, its first one being lost: a push left, its outcome unknown.
const CodeRecordLost = "stkgate.record_lost"

// CodeRefused is the result code of a refusal that came with no code at all
// (neither Daraja's nor an HTTP status): every outcome has a code.
const CodeRefused = "stkgate.refused"

// CodePhoneBusy is the result code of a payment given up because another
// payment's prompts kept its phone busy for as long as JetStream would
// redeliver the request (events.DispatcherMaxDeliver waits).
const CodePhoneBusy = "stkgate.phone_busy"

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
	if err := checkCallbackBase(cfg.CallbackBaseURL); err != nil {
		return fmt.Errorf("dispatcher: CallbackBaseURL: %w", err)
	}
	if cfg.CallbackSecrets.Len() == 0 {
		return errors.New("dispatcher: CallbackSecrets is required (CALLBACK_SECRET)")
	}
	warnCallbackBase(log, cfg)

	client, err := daraja.New(cfg.Daraja)
	if err != nil {
		return fmt.Errorf("dispatcher: daraja client: %w", err)
	}

	nc, err := events.Connect(cfg.NATSURL, "stkgate-dispatcher", log)
	if err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	defer events.Close(nc, log)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("dispatcher: jetstream: %w", err)
	}

	res, err := setUp(ctx, log, js, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	log.Info("dispatcher started", "consumer", events.ConsumerDispatcher, "concurrency", cfg.Concurrency)
	cfg.maxDeliver = res.requests.CachedInfo().Config.MaxDeliver
	if cfg.queueStale <= 0 {
		// Several missed looks, and a redelivery after a crash (AckWait).
		cfg.queueStale = max(10*cfg.PhoneWait, res.requests.CachedInfo().Config.AckWait+cfg.PhoneWait)
	}
	if cfg.maxDeliver <= 0 {
		cfg.maxDeliver = math.MaxInt
	}
	if cfg.queueGone <= 0 {
		cfg.queueGone = max(DefaultQueueGone, 2*cfg.queueStale)
	}

	d := &dispatcher{
		cfg:      cfg,
		log:      log,
		client:   client,
		js:       js,
		stream:   res.stream,
		pushLog:  res.pushLog,
		pub:      &events.Publisher{JS: js, Source: Source},
		attempts: attempts{kv: res.attempts},
		phones:   phones{kv: res.phones},
		shares:   newShares(cfg.Concurrency, cfg.ClientMaxInFlight, cfg.clientWait, handBackSpacing(cfg.Daraja.MaxRPS)),
	}
	releaseDone := make(chan struct{})
	go func() {
		defer close(releaseDone)
		d.releasePhones(ctx, res.release)
	}()
	d.consume(ctx, res.requests)
	<-releaseDone
	log.Info("dispatcher stopped")
	return nil
}

type setUpResult struct {
	stream, pushLog   jetstream.Stream
	requests, release jetstream.Consumer
	attempts, phones  jetstream.KeyValue
}

// setUp creates the stream, the buckets and the consumers, retrying while
// NATS is not reachable yet so the services can start in any order
// (worker.RetryStart).
func setUp(ctx context.Context, log *slog.Logger, js jetstream.JetStream, cfg Config) (setUpResult, error) {
	res, err := worker.RetryStart(ctx, log, "dispatcher set-up", func(ctx context.Context) (res setUpResult, err error) {
		if res.stream, err = events.EnsureStream(ctx, js, cfg.StreamReplicas); err != nil {
			return res, err
		}
		if res.attempts, err = ensureAttempts(ctx, js, cfg.StreamReplicas); err != nil {
			return res, err
		}
		if res.pushLog, err = events.EnsurePushLogStream(ctx, js, cfg.StreamReplicas); err != nil {
			return res, err
		}
		if res.phones, err = worker.EnsureBucket(ctx, js, events.PhonesConfig(cfg.StreamReplicas, cfg.PhoneLockTTL)); err != nil {
			return res, err
		}
		// Before the consumers: their MaxDeliver advisories are kept
		// only once STK_ADVISORIES exists.
		if _, err := events.EnsureAdvisoryStream(ctx, js, cfg.StreamReplicas); err != nil {
			return res, err
		}
		if res.requests, err = requestConsumer(ctx, log, js, cfg); err != nil {
			return res, err
		}
		if res.release, err = ensureConsumer(ctx, log, js, events.PhoneReleaseConsumer()); err != nil {
			return res, err
		}
		return res, nil
	})
	if err != nil {
		return res, fmt.Errorf("dispatcher: %w", err)
	}
	return res, nil
}

// requestConsumer creates (or brings up to date) the consumer of
// stk.requested.
func requestConsumer(ctx context.Context, log *slog.Logger, js jetstream.JetStream, cfg Config) (jetstream.Consumer, error) {
	cc := events.DispatcherConsumer()
	if cfg.tuneConsumer != nil {
		cfg.tuneConsumer(&cc)
	}
	return ensureConsumer(ctx, log, js, cc)
}

// ensureConsumer creates the consumer cc of the STK stream or brings it up
// to date. When the server fails to with an internal error, it takes the
// consumer the server runs, as it is: nats-server has been seen (make chaos,
// a consumer deleted while another dispatcher created it again) to fail
// every update of a consumer ("…/meta.inf.tmp: no such file or directory")
// until it restarted, while the consumer itself ran on.
func ensureConsumer(ctx context.Context, log *slog.Logger, js jetstream.JetStream, cc jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, cc)
	if err == nil {
		return c, nil
	}
	err = fmt.Errorf("create consumer %s: %w", cc.Durable, err)
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.Code < 500 {
		return nil, err
	}
	running, lerr := js.Consumer(ctx, events.StreamName, cc.Durable)
	if lerr != nil {
		return nil, err
	}
	log.Error("the server cannot update the consumer: using it as it runs; restart nats-server if this lasts", "consumer", cc.Durable, "error", err)
	return running, nil
}

func warnCallbackBase(log *slog.Logger, cfg Config) {
	u, err := url.Parse(cfg.CallbackBaseURL)
	if err != nil {
		return
	}
	if u.Scheme != "https" && strings.HasSuffix(hostOf(cfg.Daraja.BaseURL), "safaricom.co.ke") {
		log.Warn("CALLBACK_BASE_URL is not https: Safaricom expects an https callback URL", "callback_base_url", redact.URLs(cfg.CallbackBaseURL))
	}
	if strings.Contains(strings.ToLower(cfg.CallbackBaseURL), "mpesa") {
		log.Warn("CALLBACK_BASE_URL contains \"mpesa\": Daraja is reported to refuse such callback URLs", "callback_base_url", redact.URLs(cfg.CallbackBaseURL))
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
	cfg      Config
	log      *slog.Logger
	client   *daraja.Client
	js       jetstream.JetStream
	stream   jetstream.Stream // STK
	pushLog  jetstream.Stream // STK_PUSHES
	pub      *events.Publisher
	attempts attempts
	phones   phones
	shares   *shares
}

// releasePhones consumes stk.completed until ctx ends and releases the
// phone lock the completed payment still holds, so the next payment for that
// phone may be pushed at once rather than after the lock's TTL. A consumer
// deleted meanwhile is created again. On return the releases in hand have
// finished.
func (d *dispatcher) releasePhones(ctx context.Context, cons jetstream.Consumer) {
	worker.Pool{Name: events.ConsumerPhoneRelease, Concurrency: releaseConcurrency, ShutdownTimeout: d.cfg.ShutdownTimeout,
		Recreate: func(ctx context.Context) (jetstream.Consumer, error) {
			return ensureConsumer(ctx, d.log, d.js, events.PhoneReleaseConsumer())
		},
		Log: d.log,
	}.Run(ctx, cons, func(_, work context.Context, msg jetstream.Msg) { d.releasePhone(work, msg) })
}

// releaseConcurrency is how many completions the phone releaser handles at
// once: each is one key-value update.
const releaseConcurrency = 4

func (d *dispatcher) releasePhone(ctx context.Context, msg jetstream.Msg) {
	id := events.TrackingIDOf(msg.Subject())
	log := d.log.With("tracking_id", id)
	_, ev, err := events.Decode(msg.Data())
	if err != nil {
		// The projector reports malformed events; no lock names them.
		log.Debug("phone release: undecodable stk.completed skipped", "error", err)
		_ = msg.Term()
		return
	}
	c, ok := ev.(events.Completed)
	if !ok {
		_ = msg.Term()
		return
	}
	released, err := d.phones.releaseHeldBy(context.WithoutCancel(ctx), c.Phone, id)
	if err != nil {
		delay := events.PhoneReleaseRetry(worker.Delivered(msg))
		log.Warn("phone lock not released on completion; retrying", "error", err, "retry_in", delay.String())
		_ = msg.NakWithDelay(delay)
		return
	}
	if released {
		log.Info("payment completed: phone released for the next payment", "phone", events.MaskPhone(c.Phone))
	}
	if err := msg.Ack(); err != nil {
		log.Debug("ack of stk.completed for phone release", "error", err)
	}
}

// consume hands each stk.requested to handle, with Concurrency pushes at
// once, until ctx ends; then it gives the pushes in flight and the
// publishing of their outcome ShutdownTimeout to finish. worker.Pool pulls
// messages only for free handlers: a message fetched ahead of a handler
// would age in a buffer past the AckWait, be redelivered while the first
// copy still waits, and both copies would push the customer. A deleted
// consumer is created again: it delivers every request the stream holds
// again, and the attempt records, the push log and the stream itself keep
// each from being pushed twice.
func (d *dispatcher) consume(ctx context.Context, cons jetstream.Consumer) {
	worker.Pool{
		Name:            events.ConsumerDispatcher,
		Concurrency:     d.cfg.Concurrency,
		FetchWait:       fetchWait,
		ProgressEvery:   d.cfg.ProgressInterval,
		ShutdownTimeout: d.cfg.ShutdownTimeout,
		Recreate: func(ctx context.Context) (jetstream.Consumer, error) {
			return requestConsumer(ctx, d.log, d.js, d.cfg)
		},
		Log: d.log,
	}.Run(ctx, cons, d.handle)
}

// handle dispatches one stk.requested. stop ends on shutdown: no new attempt
// starts after it. work ends only after the shutdown timeout: an attempt in
// flight and the recording of an outcome get that long to finish.
//
// The attempt record (STK_ATTEMPTS) is read first and written before every
// push, so that whatever delivery of the request comes next, and whichever
// dispatcher instance gets it, knows whether a push may already have
// reached the customer.
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
		if err := worker.HandBack(msg); err != nil {
			log.Warn("nak on stop", "error", err)
		}
		return
	}

	delivered, seq := uint64(1), uint64(0)
	if meta, err := msg.Metadata(); err == nil {
		delivered, seq = meta.NumDelivered, meta.Sequence.Stream
	}

	// Past half its deliveries a request goes whatever its client's share,
	// so that waiting for it never costs a payment (the phone's waits need
	// the other half).
	done, wait, why := d.shares.take(ask{client: req.Client, phone: req.Phone, id: id, seq: seq}, time.Now(), delivered >= uint64(d.cfg.maxDeliver/2))
	if done == nil {
		line := "client at its share of the workers: waiting for the other clients' requests"
		if why == behindPhone {
			line = "an earlier request for the phone waits for its client's share: waiting behind it"
		}
		log.Debug(line, "client", req.Client, "retry_in", wait.Round(time.Millisecond).String(), "delivered", delivered)
		worker.Nak(log, msg, wait)
		return
	}
	defer done()

	rec, rev, err := d.attempts.get(work, id)
	if err != nil {
		log.Error("cannot read the attempt record: not pushing; retrying later", "error", err)
		worker.Nak(log, msg, d.cfg.RecheckDelay)
		return
	}
	switch rec.State {
	case "", events.AttemptNotSent:
		// Nothing can have reached the customer: push (again).
		if rev != 0 {
			log.Info("request redelivered after attempts that did not reach Daraja: pushing again",
				"delivered", delivered, "calls", rec.Calls)
		}
	case events.AttemptAccepted, events.AttemptRefused, events.AttemptGaveUp:
		log.Info("request redelivered after its outcome was recorded: not pushing again; making sure its event is stored",
			"state", rec.State, "delivered", delivered)
		if err := d.restore(work, log, msg, req, rec); err != nil {
			log.Error("event of a recorded outcome not stored; leaving the request for redelivery", "error", err, "state", rec.State)
			worker.Nak(log, msg, d.cfg.RecheckDelay)
			return
		}
		d.leaveQueue(work, log, req.Phone, id)
		d.ack(work, log, msg)
		return
	default:
		// sending, ambiguous (or a state this version does not know): a
		// push may have prompted the customer; another could charge them
		// twice. The callback or the reconciler settles it.
		log.Warn("an earlier delivery may have prompted the customer: not pushing again; the callback or the reconciler settles it",
			"state", rec.State, "calls", rec.Calls, "delivered", delivered)
		d.leaveQueue(work, log, req.Phone, id)
		d.ack(work, log, msg)
		return
	}

	lockRev, holder, err := d.phones.acquire(work, req.Phone, id, seq, time.Now().UTC(), d.queueTimes())
	if err != nil {
		log.Error("cannot take the phone's lock: not pushing; retrying later", "error", err)
		worker.Nak(log, msg, d.cfg.RecheckDelay)
		return
	}
	if holder != "" {
		if delivered >= uint64(d.cfg.maxDeliver) {
			// The last delivery JetStream will make: finish the payment
			// rather than let it run out unanswered.
			log.Warn("phone busy for too long: giving up", "holder_tracking_id", holder, "delivered", delivered)
			if err := d.phones.leave(work, req.Phone, id, time.Now().UTC(), d.cfg.queueGone); err != nil {
				log.Warn("not taken off the phone's waiting list; the entry goes stale", "error", err)
			}
			rec.TrackingID = id
			rec.State = events.AttemptGaveUp
			rec.ErrorCode = CodePhoneBusy
			rec.ErrorMessage = "another payment's prompt kept the phone busy"
			if rec.Uncertain {
				// An earlier push answered 503 may have prompted the
				// customer: not a failure; the callback or the reconciler
				// decides.
				rec.State = events.AttemptAmbiguous
			}
			rec.UpdatedAt = time.Now().UTC()
			if _, err := d.attempts.put(work, rec, rev); err != nil {
				log.Error("cannot record giving up; retrying later", "error", err)
				worker.Nak(log, msg, d.cfg.RecheckDelay)
				return
			}
			if rec.State == events.AttemptAmbiguous {
				d.ack(work, log, msg)
				return
			}
			if err := d.publish(work, log, msg, completedOf(req, rec)); err != nil {
				log.Error("OUTCOME NOT RECORDED: stk.completed could not be published; leaving the request for redelivery", "error", err)
				return
			}
			d.ack(work, log, msg)
			return
		}
		// Another payment's prompt may be open on this phone, or an
		// earlier request waits for it: wait in JetStream (durably), on the
		// phone's waiting list, and look again later.
		log.Debug("phone busy with another payment's prompt: waiting", "before_tracking_id", holder, "delivered", delivered)
		worker.Nak(log, msg, d.cfg.PhoneWait)
		return
	}

	// The phone is ours. Before the push: a request whose record is gone
	// (STK_ATTEMPTS purged or lost, the consumer recreated) may have been
	// pushed, or finished, long ago; a request whose earlier pushes did
	// not reach Daraja may have been finished meanwhile.
	switch found, err := d.evidence(work, id, rev == 0); {
	case err != nil:
		log.Error("cannot tell whether the payment was pushed or finished before: not pushing; retrying later", "error", err)
		worker.Nak(log, msg, d.cfg.RecheckDelay)
		return
	case found.completed:
		log.Warn("request redelivered after its outcome was stored: not pushing", "attempt_state", rec.State, "delivered", delivered)
		if err := d.phones.release(work, req.Phone, lockRev); err != nil {
			log.Warn("phone lock not released; it expires by itself", "error", err)
		}
		d.ack(work, log, msg)
		return
	case found.dispatched:
		// Daraja accepted a push for it: its prompt may be open, so the
		// lock stays until the completion (or its TTL).
		log.Warn("request redelivered without its attempt record, but Daraja accepted its push: not pushing again", "delivered", delivered)
		d.ack(work, log, msg)
		return
	case found.pushed != nil:
		// A push left and its record is gone: its fate is unknown. The
		// record is written again as ambiguous, so the reconciler waits for
		// its callback from the time it left; the lock stays.
		a := *found.pushed
		a.TrackingID, a.State, a.UpdatedAt = id, events.AttemptAmbiguous, time.Now().UTC()
		a.ErrorCode, a.ErrorMessage = CodeRecordLost, "the attempt record was lost after a push was sent; its outcome is unknown"
		if _, err := d.attempts.put(work, a, 0); err != nil {
			log.Error("push log shows a push whose record is gone; record not written again, retrying later", "error", err)
			worker.Nak(log, msg, d.cfg.RecheckDelay)
			return
		}
		log.Warn("request redelivered without its attempt record, but a push left for it: not pushing again; the callback or the reconciler settles it",
			"calls", a.Calls, "sent_at", a.SentAt, "delivered", delivered)
		d.ack(work, log, msg)
		return
	}

	out := d.push(stop, work, log, msg, req, &rec, rev, lockRev)
	switch out.kind {
	case outcomeAccepted:
		log = log.With("merchant_request_id", rec.MerchantRequestID, "checkout_request_id", rec.CheckoutRequestID)
		log.Info("push accepted", "attempts", out.attempts, "calls", rec.Calls)
		// The lock stays until stk.completed (releasePhones) or its TTL.
		ev := events.Dispatched{
			Payment:             req.Payment,
			MerchantRequestID:   out.resp.MerchantRequestID,
			CheckoutRequestID:   out.resp.CheckoutRequestID,
			ResponseDescription: out.resp.ResponseDescription,
			CustomerMessage:     out.resp.CustomerMessage,
		}
		if err := d.publish(work, log, msg, ev); err != nil {
			// The record says accepted, so a redelivery publishes the event
			// from it and never pushes again.
			log.Error("push accepted but stk.dispatched not yet stored; leaving the request for redelivery, which stores it from the attempt record",
				"error", err)
			worker.Nak(log, msg, d.cfg.RecheckDelay)
			return
		}
		d.ack(work, log, msg)

	case outcomeRefused, outcomeGaveUp:
		if out.kind == outcomeRefused {
			log.Warn("push refused by Daraja", "result_code", rec.ErrorCode, "result_desc", rec.ErrorMessage, "attempts", out.attempts)
		} else {
			log.Warn("push retries given up", "result_code", rec.ErrorCode, "result_desc", rec.ErrorMessage, "attempts", out.attempts)
		}
		// No prompt is open on the phone: the next payment may go.
		if err := d.phones.release(work, req.Phone, out.lockRev); err != nil {
			log.Warn("phone lock not released; it expires by itself", "error", err)
		}
		if err := d.publish(work, log, msg, completedOf(req, rec)); err != nil {
			log.Error("OUTCOME NOT RECORDED: stk.completed could not be published; leaving the request for redelivery, which stores it from the attempt record",
				"error", err, "result_code", rec.ErrorCode)
			worker.Nak(log, msg, d.cfg.RecheckDelay)
			return
		}
		d.ack(work, log, msg)

	case outcomeAmbiguous:
		// Daraja may have prompted the customer: another push could charge
		// them twice. The callback or the reconciler decides the outcome;
		// the phone stays locked until then or until the prompt expired.
		log.Warn("push outcome unknown: it may have reached the customer; not retrying, waiting for the callback",
			"error", out.err, "attempts", out.attempts)
		d.ack(work, log, msg)

	case outcomeDeferred:
		// Daraja asked for a long wait (quota, a locked subscriber): spent
		// in JetStream, not in a worker, so the requests behind this one
		// are pushed meanwhile. The record says not_sent and the phone's
		// lock is kept, so the redelivery pushes again, in turn.
		log.Info("Daraja asks to wait before the next push: waiting in JetStream, keeping the phone's lock",
			"retry_in", out.wait.Round(time.Millisecond).String(), "attempts", out.attempts, "error", out.err)
		worker.Nak(log, msg, out.wait)

	case outcomeHeld:
		// No push was sent in this round: the record could not be written
		// (NATS away, another writer on it) or the phone's lock was lost.
		log.Warn("push not sent: cannot record the attempt or keep the phone's lock; retrying later",
			"error", out.err, "attempts", out.attempts)
		if d.letGoOfPhone(work, log, id, rec, out.err) {
			d.releaseInTurn(work, log, req.Phone, id, seq, out.lockRev)
		}
		worker.Nak(log, msg, d.cfg.RecheckDelay)

	case outcomeCompletedMeanwhile:
		// An earlier call went through after all (a 503 after Daraja had
		// processed it) and its outcome is in: nothing more to push, and no
		// prompt of this payment is open any more.
		log.Warn("payment completed while its push was being retried: not pushing again", "attempts", out.attempts, "last_error", out.err)
		if err := d.phones.release(work, req.Phone, out.lockRev); err != nil {
			log.Warn("phone lock not released; it expires by itself", "error", err)
		}
		d.ack(work, log, msg)

	case outcomeStopped:
		// Stopped between attempts: hand the request back for another
		// dispatcher at once. When an attempt was answered 503 it may
		// have prompted the customer, so the phone stays locked (the next
		// delivery decides, within UncertainRetryWindow or as ambiguous);
		// otherwise none can have, and the phone goes to the next in turn.
		log.Info("stopping: request handed back before its next attempt", "attempts", out.attempts, "last_error", out.err)
		if !rec.Uncertain {
			d.releaseInTurn(work, log, req.Phone, id, seq, out.lockRev)
		}
		if err := worker.HandBack(msg); err != nil {
			log.Warn("nak on stop", "error", err)
		}
	}
}

// found is what the STK stream and the push log hold of a payment.
type found struct {
	completed  bool            // stk.completed is stored
	dispatched bool            // stk.dispatched is stored
	pushed     *events.Attempt // the newest push logged, its record being gone
}

// evidence looks for what stops a push: the payment's stk.completed and,
// when its attempt record is gone (recordGone), its stk.dispatched and the
// pushes logged in STK_PUSHES. A replica's "not found" is confirmed by the
// stream's leader (events.LastMsg): the answer decides whether a customer is
// prompted.
func (d *dispatcher) evidence(ctx context.Context, id string, recordGone bool) (found, error) {
	var f found
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	has := func(s jetstream.Stream, subject string) (*jetstream.RawStreamMsg, error) {
		m, err := events.LastMsg(ctx, d.js, s, subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("look up %s: %w", subject, err)
		}
		return m, nil
	}
	m, err := has(d.stream, events.Subject(events.TypeCompleted, id))
	if err != nil || m != nil {
		f.completed = m != nil
		return f, err
	}
	if !recordGone {
		return f, nil
	}
	if m, err = has(d.stream, events.Subject(events.TypeDispatched, id)); err != nil || m != nil {
		f.dispatched = m != nil
		return f, err
	}
	if m, err = has(d.pushLog, events.PushLogSubject(id)); err != nil || m == nil {
		return f, err
	}
	var a events.Attempt
	if err := json.Unmarshal(m.Data, &a); err != nil || a.TrackingID != id {
		// Unreadable, it still says a push left.
		a = events.Attempt{TrackingID: id, Calls: 1, SentAt: m.Time.UTC(), FirstSentAt: m.Time.UTC()}
	}
	f.pushed = &a
	return f, nil
}

// logPush records in STK_PUSHES, before it leaves, that push number
// a.Calls of the payment is being sent.
func (d *dispatcher) logPush(ctx context.Context, a events.Attempt) error {
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode push log entry: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	_, err = d.js.Publish(ctx, events.PushLogSubject(a.TrackingID), body,
		jetstream.WithMsgID(fmt.Sprintf("%s:push:%d", a.TrackingID, a.Calls)),
		jetstream.WithExpectStream(events.PushLogStreamName))
	if err != nil {
		return fmt.Errorf("log push: %w", err)
	}
	return nil
}

// queueTimes are the phone waiting list's rules: an earlier waiter unseen
// for a while keeps its place as long as its request still waits.
func (d *dispatcher) queueTimes() queueTimes {
	return queueTimes{stale: d.cfg.queueStale, gone: d.cfg.queueGone, waiting: d.stillWaiting}
}

// stillWaiting reports whether the request of trackingID still waits for
// its phone: nothing it pushed can have reached Daraja (no attempt record,
// or one saying not_sent) and it has no outcome. When in doubt, it waits.
func (d *dispatcher) stillWaiting(ctx context.Context, trackingID string) bool {
	rec, _, err := d.attempts.get(ctx, trackingID)
	if err != nil {
		return true
	}
	if rec.State != "" && rec.State != events.AttemptNotSent {
		return false
	}
	f, err := d.evidence(ctx, trackingID, false)
	return err != nil || !f.completed
}

// leaveQueue takes a request that will not be pushed off its phone's
// waiting list, so that the requests after it need not wait for it.
func (d *dispatcher) leaveQueue(ctx context.Context, log *slog.Logger, phone, id string) {
	if err := d.phones.leave(ctx, phone, id, time.Now().UTC(), d.cfg.queueGone); err != nil {
		log.Warn("not taken off the phone's waiting list; the requests after it ask whether it still waits", "error", err)
	}
}

// letGoOfPhone decides whether a round that sent nothing releases the
// phone's lock. It does, unless a prompt of this payment may be open (an
// earlier call was uncertain) or another writer of the attempt record is
// pushing it now; if that writer finished the payment instead (the
// reconciler gave it up), nobody will push and the lock is let go, so the
// next payment for the phone need not wait for its TTL.
func (d *dispatcher) letGoOfPhone(ctx context.Context, log *slog.Logger, id string, rec events.Attempt, why error) bool {
	if rec.Uncertain {
		return false
	}
	if !errors.Is(why, errConflict) {
		return true
	}
	cur, _, err := d.attempts.get(ctx, id)
	if err != nil {
		log.Warn("attempt record changed by another writer and cannot be read again: keeping the phone's lock", "error", err)
		return false
	}
	return cur.State == events.AttemptRefused || cur.State == events.AttemptGaveUp
}

// releaseInTurn lets go of the phone's lock held at lockRev by a request
// that sent nothing this round and will be delivered again: it first takes
// its place on the phone's waiting list again, so that requests accepted
// after it do not overtake it while it waits for its redelivery.
func (d *dispatcher) releaseInTurn(ctx context.Context, log *slog.Logger, phone, id string, seq, lockRev uint64) {
	if err := d.phones.join(ctx, phone, waiter{id, seq, time.Now().UTC()}, d.cfg.queueGone); err != nil {
		log.Warn("could not keep the request's place on the phone's waiting list", "error", err)
	}
	if err := d.phones.release(ctx, phone, lockRev); err != nil {
		log.Warn("phone lock not released; it expires by itself", "error", err)
	}
}

// completedOf is the stk.completed of a refused or given-up push, built
// from its record only, so that a redelivery publishes the same event.
func completedOf(req events.Requested, rec events.Attempt) events.Completed {
	desc := rec.ErrorMessage
	if rec.State == events.AttemptGaveUp && rec.ErrorCode != CodePhoneBusy {
		desc = fmt.Sprintf("Gave up after %d attempts: %s", rec.Calls, rec.ErrorMessage)
	}
	return events.Completed{
		Payment:     req.Payment,
		ResultCode:  rec.ErrorCode,
		ResultDesc:  desc,
		Source:      events.SourceDispatcher,
		CompletedAt: rec.UpdatedAt,
	}
}

// restore makes sure the event of an outcome recorded by an earlier
// delivery is in the stream: that delivery may have stopped between
// recording and publishing. The event is rebuilt from the record, with the
// same Nats-Msg-Id, and published only if the stream lacks it (the
// duplicate window alone would not cover a late redelivery).
func (d *dispatcher) restore(work context.Context, log *slog.Logger, msg jetstream.Msg, req events.Requested, rec events.Attempt) error {
	var ev events.Event = completedOf(req, rec)
	if rec.State == events.AttemptAccepted {
		ev = events.Dispatched{
			Payment:           req.Payment,
			MerchantRequestID: rec.MerchantRequestID,
			CheckoutRequestID: rec.CheckoutRequestID,
		}
	}
	subject := events.Subject(ev.Type(), req.TrackingID)
	ctx, cancel := context.WithTimeout(work, kvTimeout)
	_, err := events.LastMsg(ctx, d.js, d.stream, subject)
	cancel()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		log.Warn("recorded outcome missing from the stream: publishing it from the attempt record", "event", ev.Type())
		return d.publish(work, log, msg, ev)
	default:
		return fmt.Errorf("look up %s: %w", subject, err)
	}
}

type outcomeKind int

const (
	outcomeAccepted outcomeKind = iota
	outcomeRefused
	outcomeGaveUp
	outcomeAmbiguous
	outcomeStopped
	outcomeHeld
	outcomeDeferred
	outcomeCompletedMeanwhile
)

type outcome struct {
	kind     outcomeKind
	resp     daraja.PushResponse
	err      error // the last push error, or why no push was sent
	attempts int
	lockRev  uint64        // the phone lock's last revision
	wait     time.Duration // outcomeDeferred: how long before the next push
}

// errHeld marks a round in which no push was sent because the attempt
// could not be recorded first or the phone lock was lost.
type errHeld struct{ err error }

func (e errHeld) Error() string { return e.err.Error() }
func (e errHeld) Unwrap() error { return e.err }

// push sends the push, retrying with backoff only the answers that mean the
// push cannot have reached the customer. Before each call it renews the
// phone lock and records the attempt as sending; after each answer it
// records what came of it in *rec (revision rev).
func (d *dispatcher) push(stop, work context.Context, log *slog.Logger, msg jetstream.Msg, req events.Requested, rec *events.Attempt, rev, lockRev uint64) outcome {
	pr := daraja.PushRequest{
		Phone:            req.Phone,
		Amount:           req.Amount,
		AccountReference: req.Reference,
		TransactionDesc:  TransactionDesc,
		CallbackURL:      events.CallbackURL(d.cfg.CallbackBaseURL, req.TrackingID, d.cfg.CallbackSecrets.Token(req.TrackingID)),
	}
	rec.TrackingID = req.TrackingID
	out := outcome{lockRev: lockRev}
	var last error
	// record writes the outcome of a call. Once a push is sent its outcome
	// must be recorded, so the write is retried until work ends.
	record := func(state string) {
		rec.State = state
		rec.UpdatedAt = time.Now().UTC()
		eb := backoff.NewExponentialBackOff()
		eb.InitialInterval = 200 * time.Millisecond
		eb.MaxInterval = 5 * time.Second
		eb.MaxElapsedTime = 0
		err := backoff.RetryNotify(func() error {
			_ = msg.InProgress()
			r, err := d.attempts.put(work, *rec, rev)
			if errors.Is(err, errConflict) {
				return backoff.Permanent(err)
			}
			if err == nil {
				rev = r
			}
			return err
		}, backoff.WithContext(eb, work), func(err error, wait time.Duration) {
			log.Error("attempt record not written, retrying", "state", state, "retry_in", wait.Round(time.Millisecond).String(), "error", err)
		})
		if err != nil {
			// The record still says sending: no delivery will push again,
			// and the callback or the reconciler settles the payment.
			log.Error("attempt record not written: it stays 'sending'", "state", state, "error", err)
		}
	}
	op := func() error {
		_ = msg.InProgress() // best effort: the ticker reports progress too
		if left, ok := d.uncertainLeft(*rec); ok && left <= 0 {
			// An earlier push answered 503 may have opened a prompt that
			// the customer could have answered by now, its callback lost:
			// a push now could be a second prompt.
			return backoff.Permanent(errUncertainTooLate)
		}
		if out.attempts > 0 {
			// A retry: the last call's answer said it was not processed,
			// but a 503 guarantees nothing, and a callback for it may have
			// come meanwhile. (handle looked before the first call.)
			f, err := d.evidence(work, req.TrackingID, false)
			if err != nil {
				return backoff.Permanent(errHeld{err})
			}
			if f.completed {
				return backoff.Permanent(errCompletedMeanwhile)
			}
		}
		// The lock lives a prompt's lifetime from this push on.
		r, err := d.phones.refresh(work, req.Phone, req.TrackingID, out.lockRev)
		if err != nil {
			return backoff.Permanent(errHeld{err})
		}
		out.lockRev = r
		was := *rec
		now := time.Now().UTC()
		rec.State = events.AttemptSending
		rec.Calls++
		if rec.FirstSentAt.IsZero() {
			rec.FirstSentAt = now
		}
		rec.SentAt, rec.UpdatedAt = now, now
		if d.cfg.beforeSending != nil {
			d.cfg.beforeSending(req.TrackingID)
		}
		r, err = d.attempts.put(work, *rec, rev)
		if err != nil {
			*rec = was
			return backoff.Permanent(errHeld{err})
		}
		rev = r
		// The second record of the push, apart from STK_ATTEMPTS: written
		// before the push leaves, or the push does not leave.
		if err := d.logPush(work, *rec); err != nil {
			// Nothing was sent: the record says so again, or it stays
			// 'sending' and no delivery pushes (the safe side).
			was.State, was.UpdatedAt = events.AttemptNotSent, time.Now().UTC()
			if r, perr := d.attempts.put(work, was, rev); perr == nil {
				rev, *rec = r, was
			} else {
				log.Error("push log not written and the attempt record not put back: it stays 'sending', and the payment is not pushed again", "error", perr)
			}
			return backoff.Permanent(errHeld{err})
		}
		send := pr
		if left, ok := d.uncertainLeft(*rec); ok {
			// Writing the records, or waiting in the client (for a slot
			// under MaxRPS, a token), may take the rest of the window: the
			// check at the top holds only if the push leaves by then.
			send.SendBy = time.Now().Add(left)
		}
		// The client bounds each round trip (daraja.Config.Timeout).
		resp, err := d.client.Push(work, send)
		if errors.Is(err, daraja.ErrSendByPassed) {
			*rec = was
			return backoff.Permanent(errUncertainTooLate)
		}
		out.attempts++
		if err == nil {
			out.resp = resp
			return nil
		}
		last = err
		switch kindOf(err) {
		case daraja.KindLocked:
			if rec.Uncertain {
				// An earlier call of this payment may have reached the
				// customer after all: the phone's open prompt may be its
				// own. Pushing again could charge twice.
				return backoff.Permanent(errOwnPrompt{err})
			}
			rec.ErrorCode, rec.ErrorMessage = refusalOf(err, CodeRefused)
			record(events.AttemptNotSent)
			return err
		case daraja.KindTransient:
			rec.ErrorCode, rec.ErrorMessage = refusalOf(err, CodeRefused)
			if uncertain(err) && !rec.Uncertain {
				rec.Uncertain, rec.UncertainAt = true, rec.SentAt
			}
			record(events.AttemptNotSent)
			return err
		default:
			return backoff.Permanent(err)
		}
	}
	// A request handed back between attempts continues its retry budget.
	budget := d.cfg.RetryMaxElapsed
	if !rec.FirstSentAt.IsZero() {
		budget = max(budget-time.Since(rec.FirstSentAt), time.Nanosecond)
	}
	b := &floorBackOff{eb: &backoff.ExponentialBackOff{
		InitialInterval:     d.cfg.RetryInitialInterval,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         30 * time.Second,
		MaxElapsedTime:      budget,
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}}
	b.floor = func() time.Duration { return d.minWait(last) }
	b.window = func() (time.Duration, bool) { return d.uncertainLeft(*rec) }
	b.deferAbove = d.cfg.deferAbove
	notify := func(err error, wait time.Duration) {
		log.Warn("push failed, retrying", "attempt", out.attempts, "retry_in", wait.Round(time.Millisecond).String(), "error", err)
	}
	err := backoff.RetryNotify(op, backoff.WithContext(b, stop), notify)
	var held errHeld
	var own errOwnPrompt
	switch {
	case errors.As(err, &held):
		out.kind = outcomeHeld
		out.err = held.err
		return out
	case errors.Is(err, errCompletedMeanwhile):
		out.kind = outcomeCompletedMeanwhile
		out.err = last
		rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeRefused)
		rec.ErrorMessage = "completed while the push was retried; last error: " + rec.ErrorMessage
		record(events.AttemptAmbiguous)
		return out
	case errors.As(err, &own):
		out.kind = outcomeAmbiguous
		out.err = own.err
		rec.ErrorCode, rec.ErrorMessage = refusalOf(own.err, CodeRefused)
		record(events.AttemptAmbiguous)
		return out
	case errors.Is(err, errUncertainTooLate):
		// The record keeps the 503's code and text (this delivery's first
		// look, or the last retry's answer).
		log.Warn("push answered 503 earlier may have prompted the customer, and the window to retry it safely has passed: not pushing again; its callback or the reconciler decides")
		out.kind = outcomeAmbiguous
		out.err = last
		if last != nil {
			rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeRefused)
		}
		record(events.AttemptAmbiguous)
		return out
	}
	out.err = last
	if err != nil && b.deferred > 0 && stop.Err() == nil && work.Err() == nil {
		out.kind = outcomeDeferred
		out.wait = b.deferred
		return out
	}
	if err == nil {
		out.kind = outcomeAccepted
		rec.MerchantRequestID = out.resp.MerchantRequestID
		rec.CheckoutRequestID = out.resp.CheckoutRequestID
		rec.ErrorCode, rec.ErrorMessage = "", ""
		record(events.AttemptAccepted)
		return out
	}

	switch kindOf(last) {
	case daraja.KindRefused:
		rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeRefused)
		if rec.Uncertain {
			// This call was refused, but an earlier one answered 503 may
			// have prompted the customer, who may yet pay: not a failure.
			out.kind = outcomeAmbiguous
			record(events.AttemptAmbiguous)
			break
		}
		out.kind = outcomeRefused
		record(events.AttemptRefused)
	case daraja.KindTransient, daraja.KindLocked:
		if stop.Err() != nil || work.Err() != nil {
			// The record says not_sent: the next delivery pushes again.
			out.kind = outcomeStopped
			return out
		}
		if rec.Uncertain {
			// Given up, but an earlier call's 503 guaranteed nothing: the
			// customer may have a prompt of this payment. Not a failure;
			// its callback or the reconciler decides.
			out.kind = outcomeAmbiguous
			rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeUnreachable)
			record(events.AttemptAmbiguous)
			break
		}
		out.kind = outcomeGaveUp
		rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeUnreachable)
		record(events.AttemptGaveUp)
	default:
		// KindAmbiguous, and any kind this code does not know: the safe
		// reading is that the customer may have been prompted.
		out.kind = outcomeAmbiguous
		rec.ErrorCode, rec.ErrorMessage = refusalOf(last, CodeRefused)
		record(events.AttemptAmbiguous)
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

// refusalOf is the result code and description stk.completed carries for a
// push error. The code is never empty: Daraja's errorCode, else the HTTP
// status of an answer without one (http.<status>), else fallback. The
// description is cleaned for events and Postgres (events.CleanText).
func refusalOf(err error, fallback string) (code, desc string) {
	var de *daraja.Error
	switch {
	case errors.As(err, &de):
		code, desc = de.Code, de.Message
		if code == "" && de.HTTPStatus != 0 {
			code = fmt.Sprintf("%s%d", daraja.CodeHTTPPrefix, de.HTTPStatus)
		}
		if desc == "" && de.HTTPStatus != 0 {
			desc = fmt.Sprintf("HTTP %d", de.HTTPStatus)
		}
	case err != nil:
		desc = err.Error()
	}
	if code == "" {
		code = fallback
	}
	return code, events.CleanText(desc, events.MaxTextRunes)
}

// uncertain reports whether a failed call's answer says it was not
// processed without guaranteeing it: a 503 from the gateway (DARAJA.md).
// A push that failed getting its token is not uncertain: it was not sent.
func uncertain(err error) bool {
	var de *daraja.Error
	return errors.As(err, &de) && de.Uncertain
}

// errCompletedMeanwhile: the payment's stk.completed was found before a
// retry; the push is not sent again.
var errCompletedMeanwhile = errors.New("completed while the push was retried")

// uncertainLeft reports whether rec had a push answered 503, and how long
// is left to push it again: a push within UncertainRetryWindow of the 503'd
// one finds the prompt it may have opened still open (Daraja then answers
// "Unable to lock subscriber"); a later one could find it answered and its
// callback lost, and prompt the customer a second time. A record that does
// not say when (written before UncertainAt existed) has no time left.
func (d *dispatcher) uncertainLeft(rec events.Attempt) (time.Duration, bool) {
	if !rec.Uncertain {
		return 0, false
	}
	if rec.UncertainAt.IsZero() {
		return 0, true
	}
	return d.cfg.UncertainRetryWindow - time.Since(rec.UncertainAt), true
}

// errUncertainTooLate: a push after a 503 could no longer leave within
// UncertainRetryWindow.
var errUncertainTooLate = errors.New("too late to push again safely after a 503")

// errOwnPrompt: "Unable to lock subscriber" after an uncertain call of the
// same payment: the open prompt may be its own.
type errOwnPrompt struct{ err error }

func (e errOwnPrompt) Error() string { return e.err.Error() }
func (e errOwnPrompt) Unwrap() error { return e.err }

// floorBackOff is an exponential backoff whose next wait is raised to a
// floor that depends on the last error, within the same elapsed-time budget.
// A floor longer than deferAbove (Daraja's one-minute waits) stops the loop
// with deferred set to the wait, which the caller spends in JetStream.
type floorBackOff struct {
	eb         *backoff.ExponentialBackOff
	floor      func() time.Duration
	deferAbove time.Duration
	deferred   time.Duration
	// window, when it reports true, is the time left to push at all (after
	// a 503: dispatcher.uncertainLeft). The next wait then fits in it,
	// whatever the floor, or the loop stops.
	window func() (time.Duration, bool)
}

// minProbeWait is the shortest wait floorBackOff gives a push within its
// window; with less time left, it stops.
const minProbeWait = 50 * time.Millisecond

func (f *floorBackOff) NextBackOff() time.Duration {
	next := f.eb.NextBackOff()
	if next == backoff.Stop {
		return backoff.Stop
	}
	if f.window != nil {
		if left, ok := f.window(); ok {
			if left/2 < minProbeWait {
				return backoff.Stop
			}
			return min(next, left/2)
		}
	}
	floor := f.floor()
	if next < floor {
		if f.eb.MaxElapsedTime > 0 && f.eb.GetElapsedTime()+floor > f.eb.MaxElapsedTime {
			return backoff.Stop
		}
		next = floor
	}
	if f.deferAbove > 0 && floor > f.deferAbove {
		f.deferred = next
		return backoff.Stop
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
