package admin_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/admin"
	"github.com/stkgate/stkgate/api/projector"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// runDeps runs args against d.
func runDeps(t *testing.T, d admin.Deps, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := admin.RunWith(context.Background(), args, strings.NewReader(""), &out, &errOut, d)
	return result{code, out.String(), errOut.String()}
}

// openDB opens and migrates the database at url.
func openDB(t *testing.T, url string) *sqlx.DB {
	t.Helper()
	db, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := store.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	return db
}

// startProjector runs the real projector on ns and the database at url
// until the returned stop (or the test's end).
func startProjector(t *testing.T, ns *natstest.Server, url string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- projector.Run(ctx, projector.Config{
			NATSURL: ns.URL, DatabaseURL: url, StreamReplicas: 1, BatchSize: 16,
			Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
			RetryMaxInterval: 200 * time.Millisecond, DrainTimeout: 2 * time.Second,
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("projector: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// settled waits until the projector's consumer exists and has nothing
// pending or unacknowledged.
func settled(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	wait.For(t, "the projector settles", func() bool {
		c, err := js.Consumer(context.Background(), events.StreamName, events.ConsumerProjector)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		if err != nil {
			return false
		}
		s, err := js.Stream(context.Background(), events.StreamName)
		if err != nil {
			return false
		}
		si, err := s.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream == si.State.LastSeq
	})
}

func publish(t *testing.T, js jetstream.JetStream, evs ...events.Event) {
	t.Helper()
	pub := &events.Publisher{JS: js, Source: "stkgate/test"}
	for _, ev := range evs {
		if _, err := pub.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

// pay is one payment's events.
type pay struct {
	id         string
	requested  events.Requested
	dispatched events.Dispatched
	completed  events.Completed
}

func newPay(n int, resultCode string) pay {
	id := uuid.NewString()
	p := events.Payment{TrackingID: id, Client: "acme", Phone: "254712345678", Amount: int64(100 + n),
		Reference: fmt.Sprintf("INV-%d", n), RequestedAt: time.Now().UTC().Add(time.Duration(n) * time.Second)}
	merchant, checkout := "29115-"+id[:8], "ws_CO_"+id[:8]
	c := events.Completed{Payment: p, ResultCode: resultCode, ResultDesc: "desc " + resultCode,
		Source: events.SourceCallback, MerchantRequestID: merchant, CheckoutRequestID: checkout, CompletedAt: time.Now()}
	if resultCode == "0" {
		c.Receipt, c.TransactionDate = "R"+strings.ToUpper(id[:9]), "2024-03-21 14:30:55"
	}
	return pay{id: id, requested: events.Requested{Payment: p},
		dispatched: events.Dispatched{Payment: p, MerchantRequestID: merchant, CheckoutRequestID: checkout}, completed: c}
}

// rows is the read model: each row as JSON without the columns only
// Postgres decides (id, updated_at), by tracking id.
func rows(t *testing.T, db *sqlx.DB) map[string]string {
	t.Helper()
	var rs []struct {
		ID  string `db:"tracking_id"`
		Row string `db:"row"`
	}
	if err := db.Select(&rs, `SELECT tracking_id::text, (to_jsonb(t) - 'id' - 'updated_at')::text AS row FROM stk_pushes t`); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, r := range rs {
		m[r.ID] = r.Row
	}
	return m
}

// ids is each row's id by tracking id.
func ids(t *testing.T, db *sqlx.DB) map[string]int64 {
	t.Helper()
	var rs []struct {
		ID string `db:"tracking_id"`
		N  int64  `db:"id"`
	}
	if err := db.Select(&rs, `SELECT tracking_id::text, id FROM stk_pushes`); err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	for _, r := range rs {
		m[r.ID] = r.N
	}
	return m
}
