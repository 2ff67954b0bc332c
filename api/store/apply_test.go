package store_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var seed = flag.Uint64("seed", 0, "seed of the shuffled-sequence test (0: random)")

var requestedAt = time.Date(2024, 3, 21, 11, 30, 1, 123456789, time.UTC)

func payment(id string) events.Payment {
	return events.Payment{
		TrackingID:  id,
		Client:      "acme",
		Phone:       "254712345678",
		Amount:      1500,
		Reference:   "INV-2024-001",
		Tag:         "loan-repayment",
		RequestedAt: requestedAt,
	}
}

// The events of one payment, as the services publish them.
type story struct {
	id         string
	requested  events.Requested
	dispatched events.Dispatched
	success    events.Completed // a callback: paid
	cancelled  events.Completed // a callback: the customer cancelled
	refused    events.Completed // the dispatcher: Daraja refused the push, no ids
}

func newStory() story {
	id := uuid.NewString()
	p := payment(id)
	// Daraja's ids are unique per push, so derive them from the whole tracking
	// id (its first 8 characters collided in a long benchmark).
	merchant, checkout := "29115-"+id, "ws_CO_"+id
	// An M-Pesa receipt belongs to one payment (migration 6): ten capitals
	// and digits, derived from the id too.
	receipt := strings.ToUpper(strings.ReplaceAll(id, "-", ""))[:10]
	return story{
		id:        id,
		requested: events.Requested{Payment: p},
		dispatched: events.Dispatched{Payment: p, MerchantRequestID: merchant, CheckoutRequestID: checkout,
			ResponseDescription: "Success. Request accepted for processing", CustomerMessage: "Success. Request accepted for processing"},
		success: events.Completed{Payment: p, ResultCode: "0", ResultDesc: "The service request is processed successfully.",
			Receipt: receipt, TransactionDate: "2024-03-21 14:30:55", Source: events.SourceCallback,
			MerchantRequestID: merchant, CheckoutRequestID: checkout, CompletedAt: requestedAt.Add(54 * time.Second)},
		cancelled: events.Completed{Payment: p, ResultCode: "1032", ResultDesc: "Request cancelled by user",
			Source: events.SourceCallback, MerchantRequestID: merchant, CheckoutRequestID: checkout,
			CompletedAt: requestedAt.Add(20 * time.Second)},
		refused: events.Completed{Payment: p, ResultCode: "400.002.02", ResultDesc: "Bad Request - Invalid PhoneNumber",
			Source: events.SourceDispatcher, CompletedAt: requestedAt.Add(time.Second)},
	}
}

// successOfRetry is a success whose Daraja ids differ from the dispatched
// one's, as after a push retried when its first answer was lost.
func (s story) successOfRetry() events.Completed {
	c := s.success
	c.MerchantRequestID += "-retry"
	c.CheckoutRequestID += "-retry"
	return c
}

func (s story) base() store.Record {
	return store.Record{
		TrackingID:  s.id,
		Client:      "acme",
		PhoneNumber: "254712345678",
		Amount:      1500,
		Reference:   "INV-2024-001",
		Tag:         "loan-repayment",
		Status:      events.StatusPending,
		StatusLabel: events.LabelPending,
		Stage:       store.StageRequested,
		CreatedAt:   requestedAt.Truncate(time.Microsecond),
	}
}

func (s story) wantRequested() store.Record { return s.base() }

func (s story) wantDispatched() store.Record {
	r := s.base()
	r.Stage = store.StageDispatched
	r.MerchantRequestID = s.dispatched.MerchantRequestID
	r.CheckoutRequestID = s.dispatched.CheckoutRequestID
	return r
}

func (s story) wantCompleted(c events.Completed, ids bool) store.Record {
	r := s.base()
	r.Stage = store.StageCompleted
	r.Status, r.StatusLabel = events.Outcome(c.ResultCode)
	r.ResponseCode = c.ResultCode
	r.ResponseDescription = c.ResultDesc
	r.TransactionCode = c.Receipt
	r.TransactionDate = c.TransactionDate
	r.Source = c.Source
	if ids {
		r.MerchantRequestID = s.dispatched.MerchantRequestID
		r.CheckoutRequestID = s.dispatched.CheckoutRequestID
	}
	return r
}

type fixture struct {
	t  testing.TB
	db *store.Store
}

func newFixture(t testing.TB) *fixture {
	return &fixture{t: t, db: store.New(pgtest.New(t))}
}

func (f *fixture) apply(evs ...events.Event) {
	f.t.Helper()
	if err := f.db.Apply(context.Background(), evs); err != nil {
		f.t.Fatalf("Apply: %v", err)
	}
}

func (f *fixture) get(id string) store.Record {
	f.t.Helper()
	r, err := f.db.Get(context.Background(), "acme", id)
	if err != nil {
		f.t.Fatalf("Get(%s): %v", id, err)
	}
	return r
}

// TestApplyWritesTheTableSwappedIn: Apply's upsert is prepared once on each
// connection, and a batch that is that one statement is sent alone; a
// table swapped in under it (stkgate-admin rebuild-read-model) is what the
// next batch writes, on the same connection, without an error, and so is a
// batch applied in a transaction.
func TestApplyWritesTheTableSwappedIn(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	db.SetMaxOpenConns(1) // every Apply on the connection its statement was prepared on
	f := &fixture{t: t, db: store.New(db)}
	ctx := context.Background()
	before, after, late := newStory(), newStory(), newStory()
	f.apply(before.requested, before.dispatched, before.success)
	for _, q := range []string{
		`ALTER TABLE stk_pushes RENAME TO stk_pushes_aside`,
		`CREATE TABLE stk_pushes (LIKE stk_pushes_aside INCLUDING ALL)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	f.apply(after.requested, after.dispatched, after.success)
	f.check("a lone statement after the swap", after.wantCompleted(after.success, true))
	// Two completions of one payment: two statements, in a transaction.
	f.apply(late.requested, late.success, late.cancelled)
	f.check("a transaction after the swap", late.wantCompleted(late.success, true))
	var aside int
	if err := db.GetContext(ctx, &aside, `SELECT count(*) FROM stk_pushes_aside`); err != nil || aside != 1 {
		t.Errorf("the table set aside holds %d rows (%v), want 1: the one before the swap", aside, err)
	}
}

// TestApplyInATransactionNeedsOneConnection: a batch applied in a
// transaction uses that transaction's connection only, also when Apply's
// upsert is not prepared yet: preparing it on another connection of the
// pool while the transaction holds one waited, with every connection held
// so, for a connection that never came (until the batch's deadline).
func TestApplyInATransactionNeedsOneConnection(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	db.SetMaxOpenConns(1)
	s := store.New(db)
	p := newStory()
	// Two completions of one payment: two statements, in a transaction,
	// before any batch sent alone prepared the upsert.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Apply(ctx, []events.Event{p.requested, p.success, p.cancelled}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	f := &fixture{t: t, db: s}
	f.check("applied", p.wantCompleted(p.success, true))
}

var ignoreVolatile = cmpopts.IgnoreFields(store.Record{}, "ID", "UpdatedAt")

// check compares the row with want, apart from its id and updated_at.
func (f *fixture) check(step string, want store.Record) store.Record {
	f.t.Helper()
	got := f.get(want.TrackingID)
	if diff := cmp.Diff(want, got, ignoreVolatile); diff != "" {
		f.t.Fatalf("%s: record (-want +got):\n%s", step, diff)
	}
	if got.ID == 0 || got.UpdatedAt.IsZero() {
		f.t.Fatalf("%s: id %d, updated_at %v not set", step, got.ID, got.UpdatedAt)
	}
	return got
}

// unchanged applies evs and checks that the row did not change at all,
// updated_at included.
func (f *fixture) unchanged(step string, before store.Record, evs ...events.Event) {
	f.t.Helper()
	f.apply(evs...)
	after := f.get(before.TrackingID)
	if diff := cmp.Diff(before, after); diff != "" {
		f.t.Fatalf("%s changed the row (-before +after):\n%s", step, diff)
	}
}

func TestApplyInOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := newStory()

	f.apply(s.requested)
	r0 := f.check("requested", s.wantRequested())

	f.apply(s.dispatched)
	r1 := f.check("dispatched", s.wantDispatched())
	if r1.ID != r0.ID {
		t.Errorf("id changed from %d to %d", r0.ID, r1.ID)
	}
	if !r1.UpdatedAt.After(r0.UpdatedAt) {
		t.Errorf("updated_at %v not after %v", r1.UpdatedAt, r0.UpdatedAt)
	}

	f.apply(s.success)
	r2 := f.check("completed", s.wantCompleted(s.success, true))
	if !r2.UpdatedAt.After(r1.UpdatedAt) {
		t.Errorf("updated_at %v not after %v", r2.UpdatedAt, r1.UpdatedAt)
	}
	if r2.Status != 1 || r2.StatusLabel != "Success" || r2.ResponseCode != "0" || r2.TransactionCode != s.success.Receipt {
		t.Errorf("final record: %+v", r2)
	}
}

func TestApplyDuplicates(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := newStory()

	f.apply(s.requested, s.requested)
	r := f.check("requested twice in a batch", s.wantRequested())
	f.unchanged("requested again", r, s.requested)

	f.apply(s.dispatched)
	r = f.check("dispatched", s.wantDispatched())
	f.unchanged("dispatched again", r, s.dispatched)
	f.unchanged("dispatched twice in a batch", r, s.dispatched, s.dispatched)

	f.apply(s.success, s.success)
	r = f.check("completed twice in a batch", s.wantCompleted(s.success, true))
	f.unchanged("completed again", r, s.success)
}

func TestApplyRedelivery(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := newStory()
	f.apply(s.requested, s.dispatched, s.success)
	r := f.check("all three in one batch", s.wantCompleted(s.success, true))

	// A projector that committed and died before acking gets every event
	// again, alone or in batches of any shape.
	f.unchanged("requested redelivered", r, s.requested)
	f.unchanged("dispatched redelivered", r, s.dispatched)
	f.unchanged("completed redelivered", r, s.success)
	f.unchanged("the whole batch redelivered", r, s.requested, s.dispatched, s.success)
	f.unchanged("the batch redelivered backwards", r, s.success, s.dispatched, s.requested)
}

func TestApplyCompletedBeforeRequested(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := newStory()

	f.apply(s.success)
	r := f.check("completed first", s.wantCompleted(s.success, true))
	f.unchanged("late requested", r, s.requested)
	f.unchanged("late dispatched", r, s.dispatched)
}

func TestApplyRefusedThenDispatched(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := newStory()

	// The dispatcher's completion has no Daraja ids. A dispatched that
	// arrives later cannot reopen the payment, but its ids fill the gap.
	f.apply(s.refused)
	r := f.check("refused", s.wantCompleted(s.refused, false))
	if r.Status != 1 || r.StatusLabel != "Failed" {
		t.Fatalf("refused: status %d %q, want 1 Failed", r.Status, r.StatusLabel)
	}
	f.apply(s.dispatched)
	r = f.check("dispatched after refused", s.wantCompleted(s.refused, true))
	f.unchanged("requested after both", r, s.requested)
}

// TestApplyFoldedBeforeCompletion: a payment's requested and dispatched in
// one batch are written as one upsert (rounds folds them); the row ends as
// it would after each in turn: new, or already completed without ids.
func TestApplyFoldedBeforeCompletion(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := newStory()
	f.apply(s.requested, s.dispatched)
	f.check("requested and dispatched in one batch", s.wantDispatched())
	f.apply(s.dispatched, s.requested, s.success)
	f.check("and the completion in the next", s.wantCompleted(s.success, true))

	r := newStory()
	f.apply(r.refused)
	f.apply(r.dispatched, r.requested)
	f.check("refused, then requested and dispatched in one batch", r.wantCompleted(r.refused, true))
}

// TestApplyFoldedWithCompletion: a payment's first completion in a batch
// with its requested and dispatched is folded into their upsert (rounds'
// absorb) when that changes nothing; the row ends as after each in turn:
// the completion decides if it is the first, and the earlier events fill
// in what the row lacks either way.
func TestApplyFoldedWithCompletion(t *testing.T) {
	t.Parallel()
	f := newFixture(t)

	s := newStory()
	f.apply(s.requested, s.dispatched, s.success)
	r := f.check("all three in one batch", s.wantCompleted(s.success, true))
	f.unchanged("again, folded, on the completed row", r, s.success, s.requested, s.dispatched)
	f.unchanged("with a second completion", r, s.requested, s.dispatched, s.cancelled)

	// Already completed without ids: the folded completion does not decide,
	// but the dispatched's ids still fill the row, as alone.
	u := newStory()
	f.apply(u.refused)
	f.apply(u.requested, u.dispatched, u.success)
	f.check("refused, then all three in one batch", u.wantCompleted(u.refused, true))

	// Only the first completion of the batch is folded, and decides.
	v := newStory()
	f.apply(v.requested, v.dispatched, v.cancelled, v.success)
	f.check("two completions in one batch", v.wantCompleted(v.cancelled, true))

	// Requested on a row a dispatched already moved on: the fold's stage is
	// lower than the row's, the completion decides all the same.
	w := newStory()
	f.apply(w.dispatched)
	f.apply(w.requested, w.cancelled)
	f.check("requested and completion after dispatched", w.wantCompleted(w.cancelled, true))

	// Not folded: a completion with other Daraja ids (a retried push) takes
	// its own, as it would after the dispatched.
	x := newStory()
	retry := x.successOfRetry()
	f.apply(x.requested, x.dispatched, retry)
	want := x.wantCompleted(retry, false)
	want.MerchantRequestID, want.CheckoutRequestID = retry.MerchantRequestID, retry.CheckoutRequestID
	f.check("a completion with other ids", want)
	// Nor a second completion after a first that could not be.
	x2 := newStory()
	retry2 := x2.successOfRetry()
	f.apply(x2.requested, x2.dispatched, retry2, x2.cancelled)
	want = x2.wantCompleted(retry2, false)
	want.MerchantRequestID, want.CheckoutRequestID = retry2.MerchantRequestID, retry2.CheckoutRequestID
	f.check("a completion after one with other ids", want)

	// Not folded: the completion brings a payment field the fold lacks,
	// which the row takes only if it decides.
	y := newStory()
	refused, bare := y.refused, y.dispatched
	refused.Tag, bare.Tag = "", ""
	f.apply(refused)
	f.apply(bare, y.success)
	wantY := y.wantCompleted(refused, true)
	wantY.Tag = ""
	f.check("a losing completion with a field the fold lacks", wantY)
	z := newStory()
	bareZ := z.dispatched
	bareZ.Tag = ""
	f.apply(bareZ, z.success)
	f.check("a deciding completion with a field the fold lacks", z.wantCompleted(z.success, true))
}

func TestApplyDispatchedAfterCompleted(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := newStory()
	f.apply(s.requested)
	f.apply(s.cancelled)
	r := f.check("cancelled", s.wantCompleted(s.cancelled, true))
	f.unchanged("late dispatched", r, s.dispatched)
}

func TestApplyFirstCompletionStands(t *testing.T) {
	t.Parallel()
	t.Run("separate batches", func(t *testing.T) {
		f := newFixture(t)
		s := newStory()
		f.apply(s.requested, s.dispatched)
		f.apply(s.success)
		r := f.check("success", s.wantCompleted(s.success, true))
		f.unchanged("a second, different completion", r, s.cancelled)
		f.unchanged("a third, from the dispatcher", r, s.refused)
	})
	t.Run("one batch", func(t *testing.T) {
		f := newFixture(t)
		s := newStory()
		// In one batch, the completion that came first wins, wherever the
		// other events are.
		f.apply(s.cancelled, s.dispatched, s.success, s.requested)
		f.check("cancelled first", s.wantCompleted(s.cancelled, true))
	})
	t.Run("a refusal without ids", func(t *testing.T) {
		f := newFixture(t)
		s := newStory()
		f.apply(s.refused)
		r := f.check("refused", s.wantCompleted(s.refused, false))
		// Not even the ids of a losing completion are taken.
		f.unchanged("a later success", r, s.success)
	})
}

func TestApplyDecidingCompletionsIDsWin(t *testing.T) {
	t.Parallel()
	for _, order := range []string{"dispatched first", "completed first"} {
		t.Run(order, func(t *testing.T) {
			f := newFixture(t)
			s := newStory()
			c := s.successOfRetry()
			if order == "dispatched first" {
				f.apply(s.dispatched)
				f.apply(c)
			} else {
				f.apply(c)
				f.apply(s.dispatched)
			}
			want := s.wantCompleted(c, false)
			want.MerchantRequestID, want.CheckoutRequestID = c.MerchantRequestID, c.CheckoutRequestID
			f.check(order, want)
		})
	}
}

func TestApplyFillsMissingPaymentFields(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := newStory()
	// A completion from a producer that knew only the tracking id.
	bare := s.success
	bare.Payment = events.Payment{TrackingID: s.id}
	f.apply(bare)
	if _, err := f.db.Get(context.Background(), "acme", s.id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get before the client is known: %v, want ErrNotFound", err)
	}
	f.apply(s.requested)
	want := s.wantCompleted(s.success, true)
	got := f.get(s.id)
	// created_at is when the projector first saw the payment: the bare
	// event had no requested_at. Everything else comes from requested.
	if time.Since(got.CreatedAt) > time.Minute {
		t.Errorf("created_at %v, want about now", got.CreatedAt)
	}
	want.CreatedAt = got.CreatedAt
	if diff := cmp.Diff(want, got, ignoreVolatile); diff != "" {
		t.Fatalf("record (-want +got):\n%s", diff)
	}
	f.unchanged("requested again", got, s.requested)
}

func TestApplyInvalid(t *testing.T) {
	t.Parallel()
	s := newStory()
	badID := s.requested
	badID.TrackingID = "not-a-uuid"
	// A completion without a result code and text with NUL bytes are
	// applied, normalized: TestApplyNeverDropsACompletion.
	for _, tc := range []struct {
		name string
		ev   events.Event
	}{
		{"tracking id no uuid", badID},
		{"nil event", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			other := newStory()
			err := f.db.Apply(context.Background(), []events.Event{other.requested, tc.ev})
			if !errors.Is(err, store.ErrInvalidEvent) || !store.IsPermanent(err) {
				t.Fatalf("Apply = %v, want ErrInvalidEvent", err)
			}
			// One transaction: the valid event of the batch was not applied.
			if _, err := f.db.Get(context.Background(), "acme", other.id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the batch's valid event was applied: Get = %v", err)
			}
		})
	}
}

func TestApplyConflict(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a, b := newStory(), newStory()
	f.apply(a.dispatched)
	r := f.check("a dispatched", a.wantDispatched())

	// b's dispatched claims a's CheckoutRequestID. (A completion that does
	// is applied as an invalid outcome: TestApplyCompletionWithAnotherPaymentsCheckoutID.)
	stolen := b.dispatched
	stolen.CheckoutRequestID = a.dispatched.CheckoutRequestID
	err := f.db.Apply(context.Background(), []events.Event{b.requested, stolen})
	if !errors.Is(err, store.ErrConflict) || !store.IsPermanent(err) {
		t.Fatalf("Apply = %v, want ErrConflict", err)
	}
	if _, err := f.db.Get(context.Background(), "acme", b.id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("b written despite the failed batch: %v", err)
	}
	f.unchanged("nothing", r)
}

func TestApplyEmpty(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.apply()
	if err := f.db.Apply(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestApplyManyPaymentsInOneBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var stories []story
	var evs []events.Event
	for i := 0; i < 50; i++ {
		s := newStory()
		stories = append(stories, s)
		switch i % 3 {
		case 0:
			evs = append(evs, s.requested)
		case 1:
			evs = append(evs, s.dispatched, s.requested)
		case 2:
			evs = append(evs, s.success, s.requested, s.dispatched, s.success)
		}
	}
	f.apply(evs...)
	for i, s := range stories {
		want := []store.Record{s.wantRequested(), s.wantDispatched(), s.wantCompleted(s.success, true)}[i%3]
		f.check(fmt.Sprintf("payment %d", i), want)
	}
}

// TestApplyConverges applies the events of many payments, each in a
// shuffled order, with repeats, cut into batches of random sizes, and
// checks every row ends as the state order says: the same row whatever the
// order, and the outcome of the first completion delivered.
func TestApplyConverges(t *testing.T) {
	t.Parallel()
	sd := *seed
	if sd == 0 {
		sd = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -seed=%d)", sd, sd)
	rng := rand.New(rand.NewPCG(sd, sd>>1))
	f := newFixture(t)

	const payments = 300
	type trial struct {
		s    story
		want store.Record
	}
	var trials []trial
	var stream []events.Event
	for i := 0; i < payments; i++ {
		s := newStory()
		var evs []events.Event
		var completions []events.Completed
		switch i % 5 {
		case 0: // the usual story
			evs = []events.Event{s.requested, s.dispatched, s.success}
		case 1: // cancelled, and a second completion from a query that lost
			evs = []events.Event{s.requested, s.dispatched, s.cancelled, s.success}
		case 2: // refused by Daraja: never dispatched
			evs = []events.Event{s.requested, s.refused}
		case 3: // still pending
			evs = []events.Event{s.requested, s.dispatched}
		case 4: // the completion names other Daraja ids than the dispatched
			s.success = s.successOfRetry()
			evs = []events.Event{s.requested, s.dispatched, s.success}
		}
		// Redeliveries.
		for n := rng.IntN(4); n > 0; n-- {
			evs = append(evs, evs[rng.IntN(len(evs))])
		}
		rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
		for _, ev := range evs {
			if c, ok := ev.(events.Completed); ok {
				completions = append(completions, c)
			}
		}
		var want store.Record
		switch {
		case len(completions) > 0 && i%5 == 4:
			want = s.wantCompleted(completions[0], false)
			want.MerchantRequestID, want.CheckoutRequestID = s.success.MerchantRequestID, s.success.CheckoutRequestID
		case len(completions) > 0:
			// Only the refusal has no ids, and it is never dispatched.
			want = s.wantCompleted(completions[0], completions[0].CheckoutRequestID != "")
		default:
			want = s.wantDispatched()
		}
		trials = append(trials, trial{s, want})
		stream = append(stream, evs...)
	}
	// Interleave payments as the stream would, keeping each one's order.
	stream = interleave(rng, stream)

	for len(stream) > 0 {
		n := min(1+rng.IntN(64), len(stream))
		f.apply(stream[:n]...)
		stream = stream[n:]
	}
	for i, tr := range trials {
		f.check(fmt.Sprintf("payment %d", i), tr.want)
	}
}

// interleave merges the per-payment sequences (stored back to back in
// stream) into one, picking the next payment at random, so that each
// payment's own order is kept.
func interleave(rng *rand.Rand, stream []events.Event) []events.Event {
	queues := map[string][]events.Event{}
	var ids []string
	for _, ev := range stream {
		id := ev.Base().TrackingID
		if _, ok := queues[id]; !ok {
			ids = append(ids, id)
		}
		queues[id] = append(queues[id], ev)
	}
	out := make([]events.Event, 0, len(stream))
	for len(ids) > 0 {
		i := rng.IntN(len(ids))
		q := queues[ids[i]]
		out = append(out, q[0])
		if len(q) == 1 {
			ids = append(ids[:i], ids[i+1:]...)
		} else {
			queues[ids[i]] = q[1:]
		}
	}
	return out
}

// Two projectors share the durable consumer, so two transactions may write
// the same rows at once, in any order. Rows are locked in one order, so
// neither deadlocks, and both orders end in the same rows.
func TestApplyConcurrent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var stories []story
	var forward []events.Event
	for i := 0; i < 100; i++ {
		s := newStory()
		stories = append(stories, s)
		forward = append(forward, s.requested, s.dispatched, s.success)
	}
	backward := make([]events.Event, len(forward))
	for i, ev := range forward {
		backward[len(forward)-1-i] = ev
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for w := 0; w < 4; w++ {
		evs := forward
		if w%2 == 1 {
			evs = backward
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				if err := f.db.Apply(context.Background(), evs); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Apply: %v", err)
	}
	for i, s := range stories {
		f.check(fmt.Sprintf("payment %d", i), s.wantCompleted(s.success, true))
	}
}

func TestGet(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := newStory()
	f.apply(s.requested)
	ctx := context.Background()
	for _, tc := range []struct {
		name, client, id string
		err              error
	}{
		{"own record", "acme", s.id, nil},
		{"upper case id", "acme", strings.ToUpper(s.id), nil},
		{"another client's record", "globex", s.id, store.ErrNotFound},
		{"no client", "", s.id, store.ErrNotFound},
		{"unknown id", "acme", uuid.NewString(), store.ErrNotFound},
		{"malformed id", "acme", "123; DROP TABLE stk_pushes", store.ErrNotFound},
		{"empty id", "acme", "", store.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := f.db.Get(ctx, tc.client, tc.id)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Get = %v, want %v", err, tc.err)
			}
			if err == nil && r.TrackingID != s.id {
				t.Fatalf("Get returned %s, want %s", r.TrackingID, s.id)
			}
		})
	}
}

// TestGetReusesRowsCleanly: Get scans into rows it reuses (scanRows);
// nothing of a record read before shows in the next, whatever order they
// come in and on however many goroutines: a bare record's NULLs stay
// null after a full one, and every read is its own payment's.
func TestGetReusesRowsCleanly(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	full, bare := newStory(), newStory()
	bare.requested.Payment.Tag = ""
	f.apply(full.requested, full.dispatched, full.success, bare.requested)
	wantBare := bare.base()
	wantBare.Tag = ""
	want := map[string]store.Record{full.id: full.wantCompleted(full.success, true), bare.id: wantBare}
	ctx := context.Background()
	read := func(w int) error {
		for i := range 50 {
			id := full.id
			if (i+w)%2 == 1 {
				id = bare.id
			}
			r, err := f.db.Get(ctx, "acme", id)
			if err != nil {
				return fmt.Errorf("Get(%s): %w", id, err)
			}
			if diff := cmp.Diff(want[id], r, ignoreVolatile); diff != "" {
				return fmt.Errorf("Get(%s), read %d of goroutine %d (-want +got):\n%s", id, i, w, diff)
			}
			if _, err := f.db.Get(ctx, "globex", id); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("Get(%s) of another client = %v, want ErrNotFound", id, err)
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() { errs <- read(w) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.db.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestGetReadsTheTableSwappedIn: Get's query is prepared once on each
// connection; a table swapped in under it (stkgate-admin
// rebuild-read-model moves the live table aside and the rebuilt one in) is
// what the next Get reads, on the same connection, without an error.
func TestGetReadsTheTableSwappedIn(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	db.SetMaxOpenConns(1) // every Get on the connection its statement was prepared on
	f := &fixture{t: t, db: store.New(db)}
	ctx := context.Background()
	before, after := newStory(), newStory()
	f.apply(before.requested)
	if _, err := f.db.Get(ctx, "acme", before.id); err != nil {
		t.Fatalf("Get before the swap: %v", err)
	}
	for _, q := range []string{
		`ALTER TABLE stk_pushes RENAME TO stk_pushes_aside`,
		`CREATE TABLE stk_pushes (LIKE stk_pushes_aside INCLUDING ALL)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	f.apply(after.requested)
	if _, err := f.db.Get(ctx, "acme", before.id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a record only in the table set aside = %v, want ErrNotFound", err)
	}
	if r, err := f.db.Get(ctx, "acme", after.id); err != nil || r.TrackingID != after.id {
		t.Errorf("Get of the swapped-in table's record = %s, %v; want %s", r.TrackingID, err, after.id)
	}
}
