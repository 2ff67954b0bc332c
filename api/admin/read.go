package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Helpers of the commands that read streams (history, dlq). What they show
// of a message goes through package mask: no phone number, no callback
// token.

// readSubjects calls fn with every message of stream on filters, oldest
// first, and returns whether the stream exists.
func readSubjects(ctx context.Context, js jetstream.JetStream, stream string, filters []string, fn func(jetstream.Msg) error) (bool, error) {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return true, fmt.Errorf("read %s: %w", stream, err)
	}
	left := info.NumPending
	for left > 0 {
		msgs, err := cons.Fetch(int(min(left, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return true, fmt.Errorf("read %s: %w", stream, err)
		}
		n := 0
		for m := range msgs.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return true, fmt.Errorf("read %s: %w", stream, err)
			}
			if err := fn(m); err != nil {
				return true, err
			}
			left = md.NumPending
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return true, fmt.Errorf("read %s: %w", stream, err)
		}
		if n == 0 {
			// What was pending aged out meanwhile.
			return true, nil
		}
	}
	return true, nil
}
