package metrics

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Consume wraps msg, delivered to consumer, so that its settlement is
// counted (Consumed) by done, which the caller calls once its handler
// returned. A nil Registry returns msg itself and a done doing nothing.
func (r *Registry) Consume(consumer string, msg jetstream.Msg) (jetstream.Msg, func()) {
	if r == nil {
		return msg, func() {}
	}
	t := &trackedMsg{Msg: msg}
	return t, func() {
		result, _ := t.result.Load().(string)
		if result == "" {
			result = "in_hand"
		}
		r.Consumed(consumer, TypeOfSubject(msg.Subject()), result)
	}
}

// TypeOfSubject is the event type of a subject <type>.<tracking_id>
// (stk.requested.<id> → stk.requested).
func TypeOfSubject(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i > 0 {
		return subject[:i]
	}
	return subject
}

// trackedMsg records the first settlement of its message.
type trackedMsg struct {
	jetstream.Msg
	result atomic.Value // string
}

func (m *trackedMsg) settled(result string, err error) error {
	if err == nil {
		m.result.CompareAndSwap(nil, result)
	}
	return err
}

func (m *trackedMsg) Ack() error { return m.settled("ack", m.Msg.Ack()) }
func (m *trackedMsg) DoubleAck(ctx context.Context) error {
	return m.settled("ack", m.Msg.DoubleAck(ctx))
}
func (m *trackedMsg) Nak() error { return m.settled("nak", m.Msg.Nak()) }
func (m *trackedMsg) NakWithDelay(d time.Duration) error {
	return m.settled("nak", m.Msg.NakWithDelay(d))
}
func (m *trackedMsg) Term() error { return m.settled("term", m.Msg.Term()) }
func (m *trackedMsg) TermWithReason(reason string) error {
	return m.settled("term", m.Msg.TermWithReason(reason))
}
