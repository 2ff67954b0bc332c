package admin_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/stkgate/stkgate/api/admin"
	"github.com/stkgate/stkgate/api/store/pgtest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// The read model, damaged, is rebuilt from the stream while the projector
// runs and events keep coming; afterwards it is the table the projector
// makes from the stream on an empty database, and no event is lost.
func TestRebuildReadModel(t *testing.T) {
	ns := natstest.Start(t)
	url := pgtest.NewURL(t)
	db := openDB(t, url)
	stopLive := startProjector(t, ns, url)

	// Varied payments.
	requested, dispatched := newPay(1, "0"), newPay(2, "0")
	paid, failed := newPay(3, "0"), newPay(4, "1032")
	unknown := newPay(5, events.CodeNoAnswer)
	unknown.completed.Source = events.SourceDispatcher
	late := events.LateResult{Payment: unknown.requested.Payment, FollowsCode: events.CodeNoAnswer, ResultCode: "0",
		ResultDesc: "paid late", Receipt: "LATE12345X", TransactionDate: "2024-03-21 14:31:00", Source: events.SourceCallback,
		MerchantRequestID: unknown.dispatched.MerchantRequestID, CheckoutRequestID: unknown.dispatched.CheckoutRequestID}
	twice := newPay(6, "0") // names paid's receipt: applied as an invalid outcome
	twice.completed.Receipt = paid.completed.Receipt
	thief := newPay(7, "0") // a dispatched naming paid's CheckoutRequestID: rejected
	thief.dispatched.CheckoutRequestID = paid.dispatched.CheckoutRequestID
	publish(t, ns.JS, requested.requested, dispatched.requested, dispatched.dispatched,
		paid.requested, paid.dispatched, paid.completed, failed.requested, failed.dispatched, failed.completed,
		unknown.requested, unknown.dispatched, unknown.completed, late,
		twice.requested, twice.dispatched, twice.completed, thief.requested, thief.dispatched)
	if _, err := ns.JS.Publish(context.Background(), "stk.requested.junk", []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	settled(t, ns.JS)

	// Damage: rows lost, a row changed, an extra row nobody's event made.
	db.MustExec(`DELETE FROM stk_pushes WHERE tracking_id IN ($1, $2)`, paid.id, requested.id)
	db.MustExec(`UPDATE stk_pushes SET amount = 1, response_description = 'tampered' WHERE tracking_id = $1`, failed.id)
	// A row whose events the stream no longer has (aged out): kept as it is.
	aged := newPay(11, "0")
	db.MustExec(`INSERT INTO stk_pushes (tracking_id, client, phone_number, amount, reference, created_at, updated_at)
		VALUES ($1, 'acme', '254712345678', 5, 'OLD', now() - interval '100 days', now() - interval '99 days')`, aged.id)
	before := ids(t, db)

	// During the rebuild: events the projector writes to the live table
	// after the copy, and events stored while the swap holds the table.
	during, locked, blocked := newPay(8, "0"), newPay(9, "1"), newPay(12, "0")
	swapping := false
	defer admin.SetRebuildHook(func(phase string) {
		switch phase {
		case "copied":
			publish(t, ns.JS, during.requested, during.dispatched, dispatched.completed)
			settled(t, ns.JS)
		case "locked":
			publish(t, ns.JS, locked.requested, requested.dispatched)
		case "caught-up":
			if !swapping {
				return
			}
			// Stored after the swap read the stream: the projector's write
			// of it waits on the lock, and must land in the new table.
			publish(t, ns.JS, blocked.requested)
			wait.For(t, "the projector waits on the lock", func() bool {
				var n int
				db.Get(&n, `SELECT count(*) FROM pg_locks WHERE relation = 'public.stk_pushes'::regclass AND NOT granted`)
				return n > 0
			})
		}
	})()
	// A role the live table is granted to keeps its grant.
	reader := "stkgate_test_reader_" + strings.ReplaceAll(during.id[:8], "-", "")
	db.MustExec(`CREATE ROLE ` + reader)
	t.Cleanup(func() { db.Exec(`DROP OWNED BY ` + reader); db.Exec(`DROP ROLE ` + reader) })
	db.MustExec(`GRANT SELECT ON stk_pushes TO ` + reader)

	r := runDeps(t, admin.Deps{DB: db, DatabaseURL: url, JS: ns.JS}, "rebuild-read-model", "--dry-run")
	if r.code != admin.ExitOK {
		t.Fatalf("dry run: exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"rows the live table lacks (restored): 2", "corrected): 1\n  " + failed.id, "1 rejected and 1 malformed", "(kept as they are, the rest of their events applied on top): 1\n  " + aged.id, "dry run: nothing swapped"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dry run lacks %q:\n%s", want, r.stdout)
		}
	}
	var n int
	db.Get(&n, `SELECT count(*) FROM stk_pushes WHERE tracking_id = $1`, paid.id)
	if n != 0 {
		t.Fatal("the dry run changed the live table")
	}

	swapping = true
	r = runDeps(t, admin.Deps{DB: db, DatabaseURL: url, JS: ns.JS}, "rebuild-read-model")
	if r.code != admin.ExitOK {
		t.Fatalf("rebuild: exit %d: %s\n%s", r.code, r.stderr, r.stdout)
	}
	if !strings.Contains(r.stdout, "swapped: stk_pushes is the rebuilt table; the old one is public.stk_pushes_old_") {
		t.Errorf("rebuild:\n%s", r.stdout)
	}
	// The projector goes on, writing to the new table.
	after := newPay(10, "0")
	publish(t, ns.JS, after.requested, locked.completed)
	settled(t, ns.JS)
	wait.For(t, "the projector writes to the new table", func() bool {
		rs := rows(t, db)
		_, ok := rs[after.id]
		_, ok2 := rs[blocked.id]
		return ok && ok2
	})
	var granted bool
	if err := db.Get(&granted, `SELECT has_table_privilege($1, 'stk_pushes', 'SELECT')`, reader); err != nil || !granted {
		t.Errorf("the rebuilt table lost the live one's grant: %v", err)
	}
	got := rows(t, db)
	gotIDs := ids(t, db)
	if _, ok := got[aged.id]; !ok {
		t.Errorf("the row the stream has no event of is dropped")
	}
	delete(got, aged.id)

	// The projector's own table from the whole stream, on an empty database.
	stopLive()
	if err := ns.JS.DeleteConsumer(context.Background(), events.StreamName, events.ConsumerProjector); err != nil {
		t.Fatal(err)
	}
	refURL := pgtest.NewURL(t)
	ref := openDB(t, refURL)
	startProjector(t, ns, refURL)
	settled(t, ns.JS)
	want := rows(t, ref)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rebuilt table differs from the projector's (-projector +rebuilt):\n%s", diff)
	}
	if len(want) != 11 { // 10 payments + the thief's request
		t.Errorf("%d rows, want 11", len(want))
	}

	// Ids: a row the live table had keeps its id; a restored one gets a new
	// one after every live id.
	var top int64
	for id, n := range before {
		top = max(top, n)
		if id == paid.id || id == requested.id {
			continue
		}
		if gotIDs[id] != n {
			t.Errorf("%s: id %d, was %d", id, gotIDs[id], n)
		}
	}
	seen := map[int64]bool{}
	for id, n := range gotIDs {
		if seen[n] {
			t.Errorf("id %d twice", n)
		}
		seen[n] = true
		if (id == paid.id || id == requested.id) && n <= top {
			t.Errorf("restored %s has id %d, not after the live ones (%d)", id, n, top)
		}
	}

	// The new table has the migrations' indexes and constraints, named so.
	defs := func(d interface {
		Select(any, string, ...any) error
	}) []string {
		var out []string
		if err := d.Select(&out, `SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'stk_pushes'
			UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'stk_pushes'::regclass ORDER BY 1`); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if diff := cmp.Diff(defs(ref), defs(db)); diff != "" {
		t.Errorf("indexes and constraints (-fresh database +rebuilt):\n%s", diff)
	}
	var old []string
	if err := db.Select(&old, `SELECT tablename FROM pg_tables WHERE tablename LIKE 'stk_pushes_old_%'`); err != nil || len(old) != 1 {
		t.Errorf("old tables: %v, %v", old, err)
	}
	var schemas int
	db.Get(&schemas, `SELECT count(*) FROM pg_namespace WHERE nspname = 'stkgate_rebuild'`)
	if schemas != 0 {
		t.Error("the rebuild schema is left behind")
	}
	// A new row takes the next id of the sequence.
	if gotIDs[after.id] <= top {
		t.Errorf("a row written after the swap has id %d", gotIDs[after.id])
	}

	// Again, on the rebuilt table, dropping the old one: nothing changes.
	swapping = false
	r = runDeps(t, admin.Deps{DB: db, DatabaseURL: url, JS: ns.JS}, "rebuild-read-model", "--keep-old=false")
	if r.code != admin.ExitOK || !strings.Contains(r.stdout, "the old one is dropped") ||
		!strings.Contains(r.stdout, "restored): 0") || !strings.Contains(r.stdout, "corrected): 0") {
		t.Fatalf("second rebuild: exit %d: %s\n%s", r.code, r.stderr, r.stdout)
	}
	again := rows(t, db)
	delete(again, aged.id)
	if diff := cmp.Diff(got, again); diff != "" {
		t.Errorf("a second rebuild changed the table:\n%s", diff)
	}
	if diff := cmp.Diff(gotIDs, ids(t, db)); diff != "" {
		t.Errorf("a second rebuild changed the ids:\n%s", diff)
	}
	old = nil
	if err := db.Select(&old, `SELECT tablename FROM pg_tables WHERE tablename LIKE 'stk_pushes_old_%'`); err != nil || len(old) != 1 {
		t.Errorf("old tables after --keep-old=false: %v, %v", old, err)
	}
}

// A live table the rebuild would not reproduce, or a rebuild already
// running, is refused with nothing changed.
func TestRebuildReadModelRefuses(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	p := newPay(1, "0")
	publish(t, ns.JS, p.requested)
	for _, tc := range []struct {
		name  string
		setup []string
		lock  bool
		want  string
	}{
		{"an index of the operator's", []string{`CREATE INDEX by_amount ON stk_pushes (amount)`}, false, "index by_amount (CREATE INDEX by_amount ON stk_pushes USING btree (amount)) is not the migrations'"},
		{"a column of the operator's", []string{`ALTER TABLE stk_pushes ADD COLUMN note text`}, false, "column note (text) differs or is not made by the migrations"},
		{"a view", []string{`CREATE VIEW paid AS SELECT * FROM stk_pushes WHERE status = 1`}, false, "view paid reads the live table"},
		{"a trigger", []string{`CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$`,
			`CREATE TRIGGER stamp BEFORE UPDATE ON stk_pushes FOR EACH ROW EXECUTE FUNCTION stamp()`}, false, "trigger stamp is on the live table"},
		{"row level security", []string{`ALTER TABLE stk_pushes ENABLE ROW LEVEL SECURITY`}, false, "row level security is enabled on the live table"},
		{"a policy", []string{`CREATE POLICY mine ON stk_pushes USING (client = current_user)`}, false, "policy mine is on the live table"},
		{"a publication", []string{`CREATE PUBLICATION pushes FOR TABLE stk_pushes`}, false, "publication pushes publishes the live table"},
		{"a foreign key to it", []string{`CREATE TABLE refunds (push_id bigint REFERENCES stk_pushes (id))`}, false, "foreign key refunds_push_id_fkey of refunds refers to the live table"},
		{"a column grant", []string{`GRANT SELECT (amount) ON stk_pushes TO PUBLIC`}, false, "column amount has grants of its own"},
		{"a storage setting", []string{`ALTER TABLE stk_pushes SET (fillfactor = 80)`}, false, "storage settings {fillfactor=80} of the live table are not the migrations'"},
		{"a column's storage", []string{`ALTER TABLE stk_pushes ALTER COLUMN reference SET STATISTICS 500`}, false, "column reference's storage settings"},
		{"a rebuild running", nil, true, "another rebuild-read-model is running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := pgtest.NewURL(t)
			db := openDB(t, url)
			for _, q := range tc.setup {
				db.MustExec(q)
			}
			if tc.lock {
				conn, err := db.Conn(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := conn.ExecContext(context.Background(), `SELECT pg_advisory_lock($1)`, int64(0x73746b6761746501)); err != nil {
					t.Fatal(err)
				}
			}
			r := runDeps(t, admin.Deps{DB: db, DatabaseURL: url, JS: ns.JS}, "rebuild-read-model")
			if r.code != admin.ExitError || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant %q", r.code, r.stderr, tc.want)
			}
			var n int
			db.Get(&n, `SELECT count(*) FROM pg_tables WHERE tablename LIKE 'stk_pushes%' OR schemaname = 'stkgate_rebuild'`)
			if n != 1 {
				t.Errorf("%d tables named stk_pushes… or in the rebuild schema, want the live one only", n)
			}
		})
	}
}

// A migration applied during the copy is not lost at the swap: the live
// table's definition and the migrations' version are read again under
// the lock, and a change refuses the swap.
func TestRebuildReadModelSchemaChangedDuringCopy(t *testing.T) {
	ns := natstest.Start(t)
	p := newPay(1, "0")
	publish(t, ns.JS, p.requested)
	for _, tc := range []struct {
		name, during, want string
	}{
		{"a column", `ALTER TABLE stk_pushes ADD COLUMN note text`, "the live table's definition changed during the rebuild"},
		{"an index", `CREATE INDEX by_amount ON stk_pushes (amount)`, "the live table's definition changed during the rebuild"},
		{"a migration", `INSERT INTO stkgate_schema_migrations (version_id, is_applied) VALUES (9999, true)`, "the migrations' version changed during the rebuild"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := pgtest.NewURL(t)
			db := openDB(t, url)
			defer admin.SetRebuildHook(func(phase string) {
				if phase == "copied" {
					db.MustExec(tc.during)
				}
			})()
			r := runDeps(t, admin.Deps{DB: db, DatabaseURL: url, JS: ns.JS}, "rebuild-read-model")
			if r.code != admin.ExitError || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant %q", r.code, r.stderr, tc.want)
			}
			var n int
			db.Get(&n, `SELECT count(*) FROM pg_tables WHERE tablename LIKE 'stk_pushes%' OR schemaname = 'stkgate_rebuild'`)
			if n != 1 {
				t.Errorf("%d tables named stk_pushes… or in the rebuild schema, want the live one only", n)
			}
		})
	}
}
