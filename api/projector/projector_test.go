package projector_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/projector"
	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/logtest"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/pgserver"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// logtest.Buffer collects the projector's logs for assertions and for the
// failure output.
type harness struct {
	t     *testing.T
	ns    *natstest.Server
	dbURL string
	store *store.Store
	pub   *events.Publisher
	logs  *logtest.Buffer
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWithDB(t, pgtest.NewURL(t))
}

func newHarnessWithDB(t *testing.T, dbURL string) *harness {
	t.Helper()
	ns := natstest.Start(t)
	db, err := store.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := store.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t:     t,
		ns:    ns,
		dbURL: dbURL,
		store: store.New(db),
		pub:   &events.Publisher{JS: ns.JS, Source: "stkgate/test"},
		logs:  &logtest.Buffer{},
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("projector logs:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *harness) config() projector.Config {
	return projector.Config{
		NATSURL:          h.ns.URL,
		DatabaseURL:      h.dbURL,
		StreamReplicas:   1,
		BatchSize:        64,
		Logger:           slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		RetryMaxInterval: 200 * time.Millisecond,
		DrainTimeout:     2 * time.Second,
	}
}

// run starts the projector; the returned stop cancels it and checks that
// it returned nil promptly. Cleanup stops it too.
func (h *harness) run(cfg projector.Config) (stop func()) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- projector.Run(ctx, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					h.t.Errorf("Run returned %v, want nil after cancel", err)
				}
			case <-time.After(15 * time.Second):
				h.t.Errorf("Run did not return within 15s of cancel")
			}
		})
	}
	h.t.Cleanup(stop)
	return stop
}

func (h *harness) publish(evs ...events.Event) {
	h.t.Helper()
	for _, ev := range evs {
		if _, err := h.pub.Publish(context.Background(), ev); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *harness) publishRaw(subject string, body []byte) {
	h.t.Helper()
	if _, err := h.ns.JS.Publish(context.Background(), subject, body); err != nil {
		h.t.Fatal(err)
	}
}

// eventually polls cond until it holds or 15s have passed.
func (h *harness) eventually(what string, cond func() (bool, string)) {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: not reached in 15s; last: %s", what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var ignoreVolatile = cmpopts.IgnoreFields(store.Record{}, "ID", "CreatedAt", "UpdatedAt")

// converge waits until every tracking id's record equals its want.
func (h *harness) converge(want map[string]store.Record) {
	h.t.Helper()
	h.eventually("records converge", func() (bool, string) {
		for id, w := range want {
			got, err := h.store.Get(context.Background(), w.Client, id)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", id, err)
			}
			if diff := cmp.Diff(w, got, ignoreVolatile); diff != "" {
				return false, fmt.Sprintf("%s (-want +got):\n%s", id, diff)
			}
		}
		return true, ""
	})
}

// settled waits until the projector's consumer has nothing pending or
// unacknowledged: every message was acked or terminated.
func (h *harness) settled() *jetstream.ConsumerInfo {
	h.t.Helper()
	var info *jetstream.ConsumerInfo
	h.eventually("consumer settles", func() (bool, string) {
		var err error
		if info, err = h.consumerInfo(); err != nil {
			return false, err.Error()
		}
		return info.NumPending == 0 && info.NumAckPending == 0,
			fmt.Sprintf("pending %d, ack pending %d", info.NumPending, info.NumAckPending)
	})
	return info
}

// consumerInfo asks the server for the projector's consumer's info.
func (h *harness) consumerInfo() (*jetstream.ConsumerInfo, error) {
	c, err := h.ns.JS.Consumer(context.Background(), events.StreamName, events.ConsumerProjector)
	if err != nil {
		return nil, err
	}
	return c.Info(context.Background())
}

type story struct {
	id         string
	requested  events.Requested
	dispatched events.Dispatched
	completed  events.Completed
}

func newStory(resultCode string) story {
	id := uuid.NewString()
	p := events.Payment{
		TrackingID:  id,
		Client:      "acme",
		Phone:       "254712345678",
		Amount:      1500,
		Reference:   "INV-1",
		RequestedAt: time.Now().UTC(),
	}
	merchant, checkout := "29115-"+id[:8], "ws_CO_"+id[:8]
	c := events.Completed{Payment: p, ResultCode: resultCode, ResultDesc: "desc " + resultCode,
		Source: events.SourceCallback, MerchantRequestID: merchant, CheckoutRequestID: checkout, CompletedAt: time.Now()}
	if resultCode == "0" {
		c.Receipt, c.TransactionDate = "R"+strings.ToUpper(id[:9]), "2024-03-21 14:30:55"
	}
	return story{
		id:         id,
		requested:  events.Requested{Payment: p},
		dispatched: events.Dispatched{Payment: p, MerchantRequestID: merchant, CheckoutRequestID: checkout},
		completed:  c,
	}
}

func (s story) want(stage int) store.Record {
	r := store.Record{
		TrackingID:  s.id,
		Client:      "acme",
		PhoneNumber: "254712345678",
		Amount:      1500,
		Reference:   "INV-1",
		Stage:       stage,
	}
	r.Status, r.StatusLabel = events.Outcome("")
	if stage >= store.StageDispatched {
		r.MerchantRequestID, r.CheckoutRequestID = s.dispatched.MerchantRequestID, s.dispatched.CheckoutRequestID
	}
	if stage == store.StageCompleted {
		c := s.completed
		r.Status, r.StatusLabel = events.Outcome(c.ResultCode)
		r.ResponseCode, r.ResponseDescription = c.ResultCode, c.ResultDesc
		r.TransactionCode, r.TransactionDate, r.Source = c.Receipt, c.TransactionDate, c.Source
	}
	return r
}

func TestRunProjects(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.run(h.config())

	want := map[string]store.Record{}
	codes := []string{"0", "1032", "1", "1037", "2001"}
	for i := 0; i < 40; i++ {
		s := newStory(codes[i%len(codes)])
		switch i % 4 {
		case 0: // in order
			h.publish(s.requested, s.dispatched, s.completed)
			want[s.id] = s.want(store.StageCompleted)
		case 1: // the callback outran the dispatcher's event
			h.publish(s.requested, s.completed, s.dispatched)
			want[s.id] = s.want(store.StageCompleted)
		case 2: // completed first of all
			h.publish(s.completed, s.dispatched, s.requested)
			want[s.id] = s.want(store.StageCompleted)
		case 3: // still waiting for the customer
			h.publish(s.requested, s.dispatched)
			want[s.id] = s.want(store.StageDispatched)
		}
	}
	h.converge(want)
	info := h.settled()
	if info.NumRedelivered != 0 {
		t.Errorf("%d messages redelivered in a run without failures", info.NumRedelivered)
	}
}

func TestRunLaterCompletionDoesNotOverride(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.run(h.config())
	s := newStory("1032")
	h.publish(s.requested, s.dispatched, s.completed)
	h.converge(map[string]store.Record{s.id: s.want(store.StageCompleted)})
	before, err := h.store.Get(context.Background(), "acme", s.id)
	if err != nil {
		t.Fatal(err)
	}

	// A reconciler's query answer comes later with another code; the first
	// outcome stands. (It has its own Nats-Msg-Id only beyond the
	// duplicate window; publish it raw to get past deduplication.)
	late := s.completed
	late.ResultCode, late.ResultDesc, late.Source = "0", "late", events.SourceQuery
	subject, _, body, err := events.Encode("stkgate/test", late, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.publishRaw(subject, body)
	h.settled()
	after, err := h.store.Get(context.Background(), "acme", s.id)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("a later completion changed the record (-before +after):\n%s", diff)
	}
}

// Batches are applied side by side, but a payment's events are applied in
// stream order: of two completions in two batches under way at once, the
// first published decides, as when batches went one after the other.
func TestRunSideBySideBatchesKeepStreamOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var stories []story
	var seconds [][]byte
	var subjects []string
	for range 24 {
		s := newStory("1032")
		stories = append(stories, s)
		second := s.completed
		second.ResultCode, second.ResultDesc, second.Source = "0", "late", events.SourceQuery
		subject, _, body, err := events.Encode("stkgate/test", second, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		subjects, seconds = append(subjects, subject), append(seconds, body)
	}
	// In groups of four payments: their first completions, then their
	// second ones (raw: their Nats-Msg-Id is the first's), so that with
	// batches of two, a payment's two completions are in batches that
	// could be under way at once.
	for g := 0; g < len(stories); g += 4 {
		for _, s := range stories[g : g+4] {
			h.publish(s.completed)
		}
		for i := g; i < g+4; i++ {
			h.publishRaw(subjects[i], seconds[i])
		}
	}
	cfg := h.config()
	cfg.BatchSize = 2
	h.run(cfg)
	want := map[string]store.Record{}
	for _, s := range stories {
		w := s.want(store.StageCompleted)
		w.MerchantRequestID, w.CheckoutRequestID = s.completed.MerchantRequestID, s.completed.CheckoutRequestID
		want[s.id] = w
	}
	h.settled()
	h.converge(want)
}

// A projector stopped mid-stream, with events published while it is down,
// catches up when started again.
func TestRunRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stop := h.run(h.config())

	want := map[string]store.Record{}
	var later []story
	for i := 0; i < 30; i++ {
		s := newStory("0")
		h.publish(s.requested)
		want[s.id] = s.want(store.StageRequested)
		later = append(later, s)
	}
	// Cancel while events are still arriving.
	go func() {
		for _, s := range later[:10] {
			_, _ = h.pub.Publish(context.Background(), s.dispatched)
		}
	}()
	time.Sleep(10 * time.Millisecond)
	stop()

	for _, s := range later {
		h.publish(s.dispatched, s.completed)
		want[s.id] = s.want(store.StageCompleted)
	}
	h.run(h.config())
	h.converge(want)
	h.settled()
}

// A projector that committed a batch and died before acking it gets the
// batch again; applying it again changes nothing.
func TestRunCommittedButNotAcked(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s1, s2 := newStory("0"), newStory("1037")
	h.publish(s1.requested, s1.dispatched, s1.completed, s2.requested)
	if err := h.store.Apply(context.Background(), []events.Event{s1.requested, s1.dispatched, s1.completed, s2.requested}); err != nil {
		t.Fatal(err)
	}
	before1, _ := h.store.Get(context.Background(), "acme", s1.id)
	before2, _ := h.store.Get(context.Background(), "acme", s2.id)

	h.run(h.config())
	h.settled()
	after1, _ := h.store.Get(context.Background(), "acme", s1.id)
	after2, _ := h.store.Get(context.Background(), "acme", s2.id)
	if diff := cmp.Diff(before1, after1); diff != "" {
		t.Errorf("redelivered events changed a record (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(before2, after2); diff != "" {
		t.Errorf("redelivered events changed a record (-before +after):\n%s", diff)
	}
}

// Messages that are not events are terminated, and the events around them
// still go through.
func TestRunMalformedIsTerminated(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	before, after := newStory("0"), newStory("0")
	h.publish(before.requested)

	bad := uuid.NewString()
	h.publishRaw("stk.requested."+bad, []byte("not json"))
	h.publishRaw("stk.completed."+bad, []byte(`{"specversion":"0.3"}`))
	// A well-formed event on another payment's subject.
	_, _, body, err := events.Encode("stkgate/test", after.completed, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.publishRaw("stk.completed."+bad, body)
	// A requested published on a completed subject.
	_, _, body, err = events.Encode("stkgate/test", after.requested, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.publishRaw("stk.completed."+after.id, body)

	h.publish(after.requested, after.dispatched)
	h.run(h.config())

	h.converge(map[string]store.Record{
		before.id: before.want(store.StageRequested),
		after.id:  after.want(store.StageDispatched),
	})
	info := h.settled()
	if info.NumRedelivered != 0 {
		t.Errorf("%d redelivered; malformed messages must be terminated, not retried", info.NumRedelivered)
	}
	if _, err := h.store.Get(context.Background(), "acme", bad); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a malformed message made a record: %v", err)
	}
	logs := h.logs.String()
	if n := strings.Count(logs, "event terminated: malformed"); n != 4 {
		t.Errorf("%d terminations logged, want 4:\n%s", n, logs)
	}
	if !strings.Contains(logs, "tracking_id="+bad) {
		t.Errorf("termination log lacks tracking_id=%s", bad)
	}
}

// An event that decodes but that the read model can never take is
// terminated alone; the rest of its batch is applied.
func TestRunRejectedEventDoesNotBlockItsBatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var stories []story
	for i := 0; i < 10; i++ {
		s := newStory("0")
		stories = append(stories, s)
		h.publish(s.requested)
		if i == 5 {
			// Decodable (its tracking id matches the subject), but no UUID.
			odd := newStory("0").requested
			odd.TrackingID = "not-a-uuid"
			h.publish(odd)
			// A dispatched claiming another payment's CheckoutRequestID.
			thief := newStory("0")
			thief.dispatched.CheckoutRequestID = stories[0].dispatched.CheckoutRequestID
			h.publish(stories[0].dispatched, thief.dispatched)
		}
	}
	// All published before the projector starts: they arrive in one batch.
	h.run(h.config())

	want := map[string]store.Record{}
	for i, s := range stories {
		want[s.id] = s.want(store.StageRequested)
		if i == 0 {
			want[s.id] = s.want(store.StageDispatched)
		}
	}
	h.converge(want)
	h.settled()
	logs := h.logs.String()
	if !strings.Contains(logs, "applying one by one") {
		t.Errorf("no fallback to one event at a time logged:\n%s", logs)
	}
	if n := strings.Count(logs, "event terminated: rejected by the read model"); n != 2 {
		t.Errorf("%d rejections logged, want 2 (bad id, conflict):\n%s", n, logs)
	}
}

// privatePostgres starts a Postgres of the test's own, which it can stop
// and start again (restart) on the same port and files.
func privatePostgres(t *testing.T) (pg *pgserver.Server, restart func()) {
	t.Helper()
	parent, err := os.MkdirTemp("", "projector-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil { // the server may run as another user
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "pg")
	pg, err = pgserver.Start(context.Background(), pgserver.Options{DataDir: dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	port := pg.Port()
	return pg, func() {
		t.Helper()
		pg2, err := pgserver.Start(context.Background(), pgserver.Options{DataDir: dir, Port: port, NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pg2.Stop() })
	}
}

// While the database is down the projector keeps its events and retries;
// when it is back, nothing is lost and nothing was terminated.
func TestRunDatabaseOutage(t *testing.T) {
	t.Parallel()
	pg, restart := privatePostgres(t)
	h := newHarnessWithDB(t, pg.URL("postgres"))
	h.run(h.config())
	first := newStory("0")
	h.publish(first.requested)
	h.converge(map[string]store.Record{first.id: first.want(store.StageRequested)})

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	second := newStory("1032")
	h.publish(first.dispatched, first.completed, second.requested, second.completed)
	h.eventually("projector notices the outage", func() (bool, string) {
		return strings.Contains(h.logs.String(), "apply failed; retrying"), "no retry logged"
	})

	restart()
	h.converge(map[string]store.Record{
		first.id:  first.want(store.StageCompleted),
		second.id: second.want(store.StageCompleted),
	})
	info := h.settled()
	if strings.Contains(h.logs.String(), "event terminated") {
		t.Errorf("events terminated during an outage:\n%s", h.logs.String())
	}
	if info.NumRedelivered != 0 {
		t.Errorf("%d redelivered: held events must not be redelivered during an outage", info.NumRedelivered)
	}
	h.noDeadLetters()
}

// A projector stopped while Postgres is down hands its events back
// (worker.HandBack), and the next projector applies them once Postgres is
// back: within seconds, not after the AckWait (30 s, more than eventually
// waits), and without a dead letter or a terminated event.
func TestRunStoppedDuringOutageHandsBack(t *testing.T) {
	t.Parallel()
	pg, restart := privatePostgres(t)
	h := newHarnessWithDB(t, pg.URL("postgres"))
	stopFirst := h.run(h.config())
	s := newStory("0")
	h.publish(s.requested)
	h.converge(map[string]store.Record{s.id: s.want(store.StageRequested)})

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	h.publish(s.dispatched, s.completed)
	h.eventually("projector notices the outage", func() (bool, string) {
		return strings.Contains(h.logs.String(), "apply failed; retrying"), "no retry logged"
	})
	stopFirst()
	if !strings.Contains(h.logs.String(), "handing them back") {
		t.Fatalf("the stopping projector handed nothing back:\n%s", h.logs.String())
	}
	// The next projector starts while Postgres is still down, and waits.
	h.run(h.config())
	restart()
	h.converge(map[string]store.Record{s.id: s.want(store.StageCompleted)})
	h.settled()
	if strings.Contains(h.logs.String(), "event terminated") {
		t.Errorf("events terminated during an outage:\n%s", h.logs.String())
	}
	h.noDeadLetters()
	c, err := h.ns.JS.Consumer(context.Background(), events.StreamName, events.ConsumerProjector)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.MaxDeliver; got != -1 {
		t.Errorf("MaxDeliver %d: an outage could use it up", got)
	}
}

// A batch slower than a second (the AckWait nats-server used while the
// consumer had a BackOff) is not delivered again while it is applied.
func TestRunSlowBatchIsNotRedelivered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	lock := h.lockReadModel()

	h.run(h.config())
	s := newStory("0")
	h.publish(s.requested, s.dispatched, s.completed)
	h.eventually("the batch waits for the lock", lock.waiting("INSERT INTO stk_pushes", 1))
	// Keep the batch waiting past one second: the slowness under test.
	<-time.After(1500 * time.Millisecond)
	c, err := h.ns.JS.Consumer(ctx, events.StreamName, events.ConsumerProjector)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 {
		t.Errorf("%d redelivered while their batch was being applied", info.NumRedelivered)
	}
	lock.release()
	h.converge(map[string]store.Record{s.id: s.want(store.StageCompleted)})
	if info := h.settled(); info.NumRedelivered != 0 {
		t.Errorf("%d redelivered", info.NumRedelivered)
	}
}

// noDeadLetters checks that STK_DLQ holds nothing.
func (h *harness) noDeadLetters() {
	h.t.Helper()
	s, err := h.ns.JS.Stream(context.Background(), events.DeadLetterStreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return
	}
	if err != nil {
		h.t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 0 {
		h.t.Errorf("%d dead letters", n)
	}
}

func TestRunStartup(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	// Nothing listens on port 1.
	cfg := projector.Config{
		NATSURL:     ns.URL,
		DatabaseURL: "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=1",
		Logger:      slog.New(slog.NewTextHandler(&logtest.Buffer{}, nil)),
	}

	t.Run("gives up after StartTimeout", func(t *testing.T) {
		cfg := cfg
		// Long enough for a try to fail on its own (connection refused)
		// on a loaded machine: the error names the last failure.
		cfg.StartTimeout = 3 * time.Second
		err := projector.Run(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "open database") || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("Run = %v, want the last open database error", err)
		}
	})
	t.Run("cancelled while waiting", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := projector.Run(ctx, cfg); err != nil {
			t.Fatalf("Run = %v, want nil when cancelled during start-up", err)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("Run took %v to notice the cancel", time.Since(start))
		}
	})
	t.Run("bad config", func(t *testing.T) {
		if err := projector.Run(context.Background(), projector.Config{NATSURL: ns.URL}); err == nil {
			t.Fatal("Run without a database URL succeeded")
		}
	})
}

// tableLock holds stk_pushes locked, in a transaction of its own, so that
// the projector's writes wait for it: released by release, or rolled back
// at the test's end.
type tableLock struct {
	t  *testing.T
	db *sqlx.DB
	tx *sql.Tx
}

// lockReadModel locks stk_pushes against every write until the lock is
// released.
func (h *harness) lockReadModel() *tableLock {
	h.t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, h.dbURL)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = db.Close() })
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.ExecContext(ctx, `LOCK TABLE stk_pushes IN EXCLUSIVE MODE`); err != nil {
		h.t.Fatal(err)
	}
	return &tableLock{t: h.t, db: db, tx: tx}
}

// waiting is a condition for harness.eventually: at least want sessions
// wait for the lock with a statement holding query.
func (l *tableLock) waiting(query string, want int) func() (bool, string) {
	return func() (bool, string) {
		var n int
		err := l.db.GetContext(context.Background(), &n, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, query)
		return err == nil && n >= want, fmt.Sprint(n, err)
	}
}

// release commits the lock's transaction: the writes waiting go on.
func (l *tableLock) release() {
	l.t.Helper()
	if err := l.tx.Commit(); err != nil {
		l.t.Fatal(err)
	}
}
