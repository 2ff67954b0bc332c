package daraja_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
)

// A push with a send-by time leaves before it or not at all: whatever the
// client waits for first (a slot under MaxRPS, a token, a new token after a
// refused one) may not push it past that time. The dispatcher relies on it
// after a 503 (docs/DARAJA.md: after a 503, one fact stkgate relies on).
func TestPushNotSentAfterItsSendBy(t *testing.T) {
	t.Parallel()
	slowOAuth := func(release <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			<-release
			replyJSON(http.StatusOK, []byte(`{"access_token":"t","expires_in":"3599"}`))(w, r)
		}
	}
	for _, tc := range []struct {
		name string
		// setup returns the stub, the client and what to release at the end.
		setup func(t *testing.T) (*stub, *daraja.Client, func())
		// apiCalls: pushes Daraja received, including the setup's.
		apiCalls int64
	}{
		{"send-by already passed", func(t *testing.T) (*stub, *daraja.Client, func()) {
			s := newStub(t, nil, replyJSON(http.StatusOK, fixture(t, "push-accepted.json")))
			return s, newClient(t, testConfig(s.URL)), func() {}
		}, 0},
		{"waiting for a token", func(t *testing.T) (*stub, *daraja.Client, func()) {
			release := make(chan struct{})
			s := newStub(t, slowOAuth(release), replyJSON(http.StatusOK, fixture(t, "push-accepted.json")))
			return s, newClient(t, testConfig(s.URL)), func() { close(release) }
		}, 0},
		{"waiting for a slot under MaxRPS", func(t *testing.T) (*stub, *daraja.Client, func()) {
			s := newStub(t, nil, replyJSON(http.StatusOK, fixture(t, "push-accepted.json")))
			cfg := testConfig(s.URL)
			cfg.MaxRPS = 0.2 // one call every 5 s
			c := newClient(t, cfg)
			if _, err := c.Push(context.Background(), validPush()); err != nil { // takes the slot
				t.Fatal(err)
			}
			return s, c, func() {}
		}, 1},
		{"waiting for a new token after a refused one", func(t *testing.T) (*stub, *daraja.Client, func()) {
			release := make(chan struct{})
			first := make(chan struct{}, 1)
			first <- struct{}{}
			oauth := func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-first: // the first token comes at once
				default:
					<-release
				}
				replyJSON(http.StatusOK, []byte(`{"access_token":"t","expires_in":"3599"}`))(w, r)
			}
			s := newStub(t, oauth, replyJSON(http.StatusNotFound, fixture(t, "invalid-token.json")))
			return s, newClient(t, testConfig(s.URL)), func() { close(release) }
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, c, release := tc.setup(t)
			defer release()
			req := validPush()
			req.SendBy = time.Now().Add(200 * time.Millisecond)
			if tc.name == "send-by already passed" {
				req.SendBy = time.Now().Add(-time.Millisecond)
			}
			_, err := c.Push(context.Background(), req)
			var e *daraja.Error
			if !errors.Is(err, daraja.ErrSendByPassed) || !errors.As(err, &e) || e.RequestSent || e.Code != daraja.CodeSendByPassed {
				t.Fatalf("error %v, want ErrSendByPassed, not sent, code %s", err, daraja.CodeSendByPassed)
			}
			if n := s.apiCalls.Load(); n != tc.apiCalls {
				t.Errorf("Daraja received %d pushes, want %d", n, tc.apiCalls)
			}
		})
	}
}

// A send-by time in the future changes nothing for a push that can leave.
func TestPushBeforeItsSendBy(t *testing.T) {
	t.Parallel()
	s := newStub(t, nil, replyJSON(http.StatusOK, fixture(t, "push-accepted.json")))
	c := newClient(t, testConfig(s.URL))
	req := validPush()
	req.SendBy = time.Now().Add(time.Minute)
	if _, err := c.Push(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if n := s.apiCalls.Load(); n != 1 {
		t.Errorf("%d pushes, want 1", n)
	}
}
