// Package dispatcher is the service that turns each stk.requested event into
// an STK push to Daraja and records what Daraja answered: stk.dispatched when
// the push was accepted, stk.completed when it was refused or could not be
// sent. It retries only what cannot have reached the customer; a push that
// may have prompted the customer is never sent again.
package dispatcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/redact"
	"github.com/stkgate/stkgate/events/kit/tracing"
	"github.com/stkgate/stkgate/events/kit/worker"
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
	tp, stopTracing := tracing.Start(cfg.Tracing, log)
	defer stopTracing()
	cfg.Daraja.Tracer = tracing.Tracer(tp)
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

	cfg.Daraja.Metrics = cmp.Or(cfg.Daraja.Metrics, cfg.Metrics)
	client, err := daraja.New(cfg.Daraja)
	if err != nil {
		return fmt.Errorf("dispatcher: daraja client: %w", err)
	}

	nc, js, err := events.ConnectJetStream(cfg.NATSURL, "stkgate-dispatcher", log)
	if err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	defer events.Close(nc, log)

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
	if cfg.sendWithin <= 0 {
		cfg.sendWithin = sendWithin
	}
	if cfg.answerGrace <= 0 {
		cfg.answerGrace = answerGrace
	}

	d := &dispatcher{
		cfg:      cfg,
		log:      log,
		client:   client,
		js:       js,
		stream:   res.stream,
		pub:      &events.Publisher{JS: js, Source: Source},
		attempts: attempts{kv: res.attempts},
		phones:   phones{kv: res.phones},
		shares:   newShares(cfg.Concurrency, cfg.ClientMaxInFlight, cfg.clientWait, handBackSpacing(cfg.Daraja.MaxRPS)),
	}
	d.watchMetrics(nc)
	d.tracer = cfg.Daraja.Tracer
	d.pub.Tracer = d.tracer
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
	pub      *events.Publisher
	attempts attempts
	phones   phones
	shares   *shares
	// tracer traces the handling of each message (worker.Pool) and the
	// events published; nil is off.
	tracer trace.Tracer
}

// releasePhones consumes stk.completed until ctx ends and releases the
// phone lock the completed payment still holds, so the next payment for that
// phone may be pushed at once rather than after the lock's TTL. A consumer
// deleted meanwhile is created again. On return the releases in hand have
// finished.
func (d *dispatcher) releasePhones(ctx context.Context, cons jetstream.Consumer) {
	worker.Pool{Name: events.ConsumerPhoneRelease, Concurrency: releaseConcurrency, ShutdownTimeout: d.cfg.ShutdownTimeout, Metrics: d.cfg.Metrics,
		Tracer: d.tracer,
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
	// Each line names the payment itself: no logger is built (With) for a
	// completion that logs nothing, or one line.
	env, err := events.DecodeAs[events.Completed](msg.Data())
	if err != nil {
		// The projector reports malformed events; no lock names them.
		d.log.Debug("phone release: undecodable stk.completed skipped", "tracking_id", id, "error", err)
		_ = msg.Term()
		return
	}
	c := env.Data
	released, err := d.phones.releaseHeldBy(context.WithoutCancel(ctx), c.Phone, id)
	if err != nil {
		delay := events.PhoneReleaseRetry(worker.Delivered(msg))
		d.log.Warn("phone lock not released on completion; retrying", "tracking_id", id, "error", err, "retry_in", delay.String())
		_ = msg.NakWithDelay(delay)
		return
	}
	if released {
		d.log.Info("payment completed: phone released for the next payment", "tracking_id", id, "phone", events.MaskPhone(c.Phone))
	}
	if err := msg.Ack(); err != nil {
		d.log.Debug("ack of stk.completed for phone release", "tracking_id", id, "error", err)
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
		Tracer:          d.tracer,
		Concurrency:     d.cfg.Concurrency,
		FetchWait:       fetchWait,
		ProgressEvery:   d.cfg.ProgressInterval,
		ShutdownTimeout: d.cfg.ShutdownTimeout,
		Metrics:         d.cfg.Metrics,
		Recreate: func(ctx context.Context) (jetstream.Consumer, error) {
			return requestConsumer(ctx, d.log, d.js, d.cfg)
		},
		Log: d.log,
	}.Run(ctx, cons, d.handle)
}
