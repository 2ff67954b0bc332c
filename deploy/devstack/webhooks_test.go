package devstack_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/webhook"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// TestWebhookDelivered: in the dev stack, a payment's stk.completed reaches
// its client's webhook endpoint, signed with the endpoint's secret, the body
// its CloudEvents envelope.
func TestWebhookDelivered(t *testing.T) {
	t.Parallel()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	key := base64.StdEncoding.EncodeToString(k)
	var dbURL string
	s := startStackWith(t, map[string]string{"WEBHOOK_SECRET_KEY": key}, stackOptions{
		dbURL: func(u string) string { dbURL = u; return u },
	})

	type got struct {
		header http.Header
		body   []byte
	}
	var mu sync.Mutex
	var reqs []got
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, got{r.Header.Clone(), b})
		mu.Unlock()
	}))
	t.Cleanup(rc.Close)

	db, err := store.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	sealer, _ := webhook.NewSealer(key)
	sec, _ := webhook.NewSecret()
	id := uuid.NewString()
	sealed, _ := sealer.Seal(id, sec)
	if err := store.New(db).AddWebhookEndpoint(context.Background(), store.WebhookEndpoint{
		ID: id, Client: "acme", URL: rc.URL + "/stk", Events: []string{events.TypeCompleted}, Secret: sealed,
	}); err != nil {
		t.Fatal(err)
	}
	tid := s.accept(t, "0712340000")
	s.waitFinal(t, tid)
	wait.For(t, "the webhook", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reqs) == 1
	})
	r := reqs[0]
	if err := webhook.Verify(sec, r.header.Get("webhook-id"), r.header.Get("webhook-timestamp"), r.header.Get("webhook-signature"), r.body, time.Now()); err != nil {
		t.Errorf("webhook does not verify: %v", err)
	}
	env, ev, err := events.Decode(r.body)
	if err != nil || env.Type != events.TypeCompleted || ev.Base().TrackingID != tid {
		t.Errorf("webhook body: %v %s", err, r.body)
	}
}
