package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ensureStreamConfig creates the stream want describes, or brings an existing
// one up to date, as EnsureStream does for STK: a stream whose settings
// already match is left alone, because nats-server v2.15 races when a stream
// update meets a consumer being created by another service starting at the
// same moment.
func ensureStreamConfig(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another service created it first, with other settings.
			s, err = js.Stream(ctx, want.Name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", want.Name, err)
	}
	if streamMatches(s.CachedInfo().Config, want) {
		return s, nil
	}
	s, err = js.UpdateStream(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("update stream %s: %w", want.Name, err)
	}
	return s, nil
}

func atLeastOne(replicas int) int {
	if replicas < 1 {
		return 1
	}
	return replicas
}
