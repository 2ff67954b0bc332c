package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
)

func init() { firstWait = time.Millisecond }

var (
	refused   = &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamNameInUse, Description: "stream name already in use with a different configuration"}
	noLeader  = &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
	internal  = &jetstream.APIError{Code: 500, ErrorCode: 10049, Description: "open meta.inf.tmp: no such file or directory"}
	notOnYet  = &jetstream.APIError{Code: 503, ErrorCode: jetstream.JSErrCodeJetStreamNotEnabled, Description: "jetstream not enabled"}
	errNoConn = errors.New("nats: no servers available for connection")
)

func TestRefused(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"configuration clash", refused, true},
		{"replicas on a lone server", &jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, true},
		{"wrapped clash", errors.Join(errors.New("ensure stream"), refused), true},
		{"no leader yet", noLeader, false},
		{"server's own failure", internal, false},
		{"jetstream not enabled yet", notOnYet, false},
		{"stream not there yet", jetstream.ErrStreamNotFound, false},
		{"consumer deleted", jetstream.ErrConsumerNotFound, false},
		{"no connection", errNoConn, false},
		{"timeout", context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		if got := Refused(tt.err); got != tt.want {
			t.Errorf("%s: Refused(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestRetryStart(t *testing.T) {
	tests := []struct {
		name      string
		failures  []error // the step's errors, one per try, before it succeeds
		wantTries int
		wantErr   error // nil: succeeds
	}{
		{"first try", nil, 1, nil},
		{"servers come up", []error{errNoConn, noLeader, internal, notOnYet}, 5, nil},
		{"permanent", []error{errNoConn, backoff.Permanent(errNoConn)}, 2, errNoConn},
		{"refused", []error{errNoConn, refused}, 2, refused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tries := 0
			v, err := RetryStart(context.Background(), slog.New(slog.DiscardHandler), "open thing", func(ctx context.Context) (int, error) {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("a try has no deadline")
				}
				tries++
				if tries <= len(tt.failures) {
					return 0, tt.failures[tries-1]
				}
				return 42, nil
			})
			if tries != tt.wantTries {
				t.Errorf("%d tries, want %d", tries, tt.wantTries)
			}
			if tt.wantErr == nil {
				if err != nil || v != 42 {
					t.Fatalf("RetryStart = %d, %v; want 42, nil", v, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.HasPrefix(err.Error(), "open thing: ") {
				t.Errorf("error %v: want %v, named by its step", err, tt.wantErr)
			}
		})
	}
}

// A step that keeps failing ends with the context, its last failure in the
// error.
func TestRetryStartEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	tries := 0
	_, err := RetryStart(ctx, slog.New(slog.DiscardHandler), "open thing", func(context.Context) (int, error) {
		tries++
		if tries == 3 {
			cancel()
		}
		return 0, errNoConn
	})
	if !errors.Is(err, errNoConn) {
		t.Errorf("error %v, want the last failure", err)
	}
	if tries != 3 {
		t.Errorf("%d tries after the context ended at the third", tries)
	}
}
