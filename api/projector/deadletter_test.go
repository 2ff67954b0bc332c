package projector_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
)

// TestRunDeadLetters: the projector runs the dead-letter watcher, so an
// event it terminates ends up in STK_DLQ with why, and the events after it
// are projected.
func TestRunDeadLetters(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.run(h.config())
	h.eventually("the watcher started", func() (bool, string) {
		return strings.Contains(h.logs.String(), "dead-letter watcher started"), ""
	})

	bad := uuid.NewString()
	h.publishRaw("stk.requested."+bad, []byte("not json"))
	good := newStory("0")
	h.publish(good.requested)

	h.eventually("the malformed event is dead-lettered", func() (bool, string) {
		s, err := h.ns.JS.Stream(context.Background(), events.DeadLetterStreamName)
		if err != nil {
			return false, err.Error()
		}
		m, err := s.GetLastMsgForSubject(context.Background(), events.DeadLetterSubject(events.ConsumerProjector, bad))
		if err != nil {
			return false, err.Error()
		}
		got := fmt.Sprintf("%s|%s|%s", m.Header.Get(events.DeadLetterHeaderReason), m.Data, m.Header.Get(events.DeadLetterHeaderTermReason))
		return strings.HasPrefix(got, "terminated|not json|malformed: "), got
	})
	h.eventually("the next event is projected", func() (bool, string) {
		_, err := h.store.Get(context.Background(), "acme", good.id)
		return err == nil, fmt.Sprint(err)
	})
	if _, err := h.ns.JS.Consumer(context.Background(), events.AdvisoryStreamName, events.ConsumerDeadLetter); err != nil {
		t.Errorf("dead-letter consumer: %v", err)
	}
}
