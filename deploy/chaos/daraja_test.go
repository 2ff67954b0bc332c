package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
)

// A replayed callback whose connection is lost (callback-ingest crashed at
// its failpoint after keeping it, as the run asks it to, 2% of kept
// callbacks) is sent again once callback-ingest is back, as a Daraja
// without its answer would: a run failed on such an EOF, the replay of a
// callback that came before stk.dispatched. One that never gets an answer
// fails the run.
func TestReplayCallbackAgainAfterALostConnection(t *testing.T) {
	var calls atomic.Int32
	drops := int32(2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if calls.Add(1) <= drops {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close() // crashed after keeping it: no answer
			return
		}
		if string(body) != `{"Body":{}}` {
			t.Errorf("replayed %q", body)
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c := darajatest.CallbackDelivery{URL: srv.URL + "/hooks/stk-push/x/y", Body: []byte(`{"Body":{}}`)}
	client := &http.Client{Timeout: 2 * time.Second}
	if err := replayOne(context.Background(), client, c, 3, time.Millisecond); err != nil {
		t.Fatalf("replayed after %d lost connections: %v", drops, err)
	}
	if n := calls.Load(); n != drops+1 {
		t.Errorf("%d deliveries, want %d", n, drops+1)
	}
	calls.Store(0)
	drops = 10
	if err := replayOne(context.Background(), client, c, 3, time.Millisecond); err == nil {
		t.Error("no answer in 3 tries, and no error")
	}
}
