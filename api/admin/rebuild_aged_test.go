package admin_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/api/admin"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
)

// ageOut deletes messages from the STK stream as its retention would: the
// last message of each subject given.
func ageOut(t *testing.T, ns *natstest.Server, subjects ...string) {
	t.Helper()
	ctx := context.Background()
	s, err := ns.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range subjects {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		if err := s.DeleteMsg(ctx, m.Sequence); err != nil {
			t.Fatal(err)
		}
	}
}

// Payments that lost part or all of their history to the stream's
// retention keep their live rows: a payment whose stk.requested the
// stream lacks is put in the rebuilt table first, as it is, and its events
// left in the stream are applied on top; its receipt and CheckoutRequestID
// are claimed before the copy, so a later payment naming them stays as the
// projector recorded it.
func TestRebuildReadModelAgedOut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"kept", nil},
		{"dropped", []string{"--drop-unstreamed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := natstest.Start(t)
			url := pgtest.NewURL(t)
			db := openDB(t, url)
			startProjector(t, ns, url)

			// lateOnly: paid, then a late result; only the late result is left.
			lateOnly := newPay(1, "0")
			late := events.LateResult{Payment: lateOnly.requested.Payment, FollowsCode: "0", ResultCode: "1032",
				ResultDesc: "cancelled late", Source: events.SourceCallback,
				MerchantRequestID: lateOnly.dispatched.MerchantRequestID, CheckoutRequestID: lateOnly.dispatched.CheckoutRequestID}
			// partial: paid; its request aged out, its dispatch and completion left.
			partial := newPay(2, "0")
			// old: paid with receipt R, all aged out; newer: a completion naming R,
			// recorded as an invalid outcome.
			old, newer := newPay(3, "0"), newPay(4, "0")
			newer.completed.Receipt = old.completed.Receipt
			publish(t, ns.JS, lateOnly.requested, lateOnly.dispatched, lateOnly.completed, late,
				partial.requested, partial.dispatched, partial.completed,
				old.requested, old.dispatched, old.completed,
				newer.requested, newer.dispatched, newer.completed)
			settled(t, ns.JS)
			sub := func(typ, id string) string { return events.Subject(typ, id) }
			ageOut(t, ns,
				sub(events.TypeRequested, lateOnly.id), sub(events.TypeDispatched, lateOnly.id), sub(events.TypeCompleted, lateOnly.id),
				sub(events.TypeRequested, partial.id),
				sub(events.TypeRequested, old.id), sub(events.TypeDispatched, old.id), sub(events.TypeCompleted, old.id))
			before := rows(t, db)
			if !strings.Contains(before[newer.id], "unverified_success") {
				t.Fatalf("the projector recorded %s", before[newer.id])
			}

			r := runDeps(t, admin.Deps{DB: db, DatabaseURL: url, JS: ns.JS}, append([]string{"rebuild-read-model"}, tc.args...)...)
			if r.code != admin.ExitOK {
				t.Fatalf("rebuild: exit %d: %s\n%s", r.code, r.stderr, r.stdout)
			}
			wantList := "the stream lacks (kept as they are, the rest of their events applied on top): 3"
			if tc.args != nil {
				wantList = "the stream lacks (dropped): 3"
			}
			if !strings.Contains(r.stdout, wantList) {
				t.Errorf("the report does not count the unstreamed payments:\n%s", r.stdout)
			}
			after := rows(t, db)
			want := map[string]string{newer.id: before[newer.id]}
			if tc.args == nil {
				want[lateOnly.id], want[partial.id], want[old.id] = before[lateOnly.id], before[partial.id], before[old.id]
			}
			for id, w := range want {
				if after[id] != w {
					t.Errorf("%s:\n got %s\nwant %s", id, after[id], w)
				}
			}
			for id := range after {
				if _, ok := want[id]; !ok {
					t.Errorf("%s is in the rebuilt table: %s", id, after[id])
				}
			}
		})
	}
}
