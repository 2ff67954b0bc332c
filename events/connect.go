package events

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events/kit/redact"
)

// unreachableEvery bounds how often a NATS that stays away is reported: the
// client retries every ReconnectWait.
const unreachableEvery = 30 * time.Second

// Connect connects a service to NATS the way every stkgate service does: a
// server that is down at start-up or later is waited for, endlessly
// (RetryOnFailedConnect, MaxReconnects -1; the service answers 503 or holds
// its work meanwhile), and every change is logged through log with the
// server's URL redacted, an unreachable server at most every 30 s. name
// is the connection's name on the server (stkgate-<service>); opts come
// after the defaults and override them.
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	var lastUnreachable atomic.Int64
	base := []nats.Option{
		nats.Name(name),
		nats.Timeout(5 * time.Second),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ConnectHandler(func(c *nats.Conn) {
			log.Info("nats connected", "url", c.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed by us
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			now := time.Now().UnixNano()
			if last := lastUnreachable.Load(); now-last >= int64(unreachableEvery) && lastUnreachable.CompareAndSwap(last, now) {
				log.Warn("nats unreachable, retrying", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("nats error", "error", err)
		}),
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		// nats.go's errors may quote the URL, password and all (a URL it
		// cannot parse): the message is redacted, the error kept for
		// errors.Is.
		return nil, redactedError{msg: "connect nats: " + redact.URLs(err.Error()), err: err}
	}
	return nc, nil
}

// ConnectJetStream is Connect and a JetStream context on the connection,
// as every service starts. The connection is the caller's to close
// (events.Close, or nc.Close where nothing is left to send); on an error
// nothing is left open.
func ConnectJetStream(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := Connect(url, name, log, opts...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// redactedError is err with a message that shows no secret.
type redactedError struct {
	msg string
	err error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

// Close flushes what nc still has to send (acks are sent asynchronously),
// for at most five seconds, then closes it.
func Close(nc *nats.Conn, log *slog.Logger) {
	if nc.IsConnected() {
		if err := nc.FlushTimeout(5 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			log.Warn("nats flush on stop", "error", err)
		}
	}
	nc.Close()
}
