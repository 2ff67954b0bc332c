package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stkgate/stkgate/deploy/binaries"
	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/failpoint"
)

var built struct {
	sync.Once
	root, bin string
	err       error
}

// builtBinaries builds every binary of the stack once for the package's
// tests, with the race detector (so the processes are checked too, and
// the build reuses what go test -race has already compiled rather than
// compiling everything a second time), before any run's deadline starts;
// without DWARF (-ldflags=-w), as make test links its test binaries. The
// benchmark's smoke run builds the same, into the same directory
// (binaries.Shared): one of the two links them.
func builtBinaries(t *testing.T) (root, bin string) {
	t.Helper()
	built.Do(func() {
		if built.root, built.err = binaries.FindRoot(); built.err != nil {
			return
		}
		built.bin, built.err = binaries.Shared(context.Background(), built.root, []string{"-race", "-ldflags=-w"}, t.Logf)
	})
	if built.err != nil {
		t.Fatalf("building the stack: %v", built.err)
	}
	return built.root, built.bin
}

// TestChaosSmall is the small version of make chaos, in make test: 150
// requests (half with an Idempotency-Key, retried; a few phones shared),
// Daraja faults that resolve without waiting out a real prompt's lifetime
// (among them pages that are not Daraja's, and a failed token request), one
// kill -9 of every service and of nats-server, Postgres stopped once, two
// dispatchers, the dispatcher's consumer deleted once, callback-ingest
// crashing after keeping a few callbacks, forged callbacks with valid
// CallBackURLs (fast failures, some of them before Daraja's answer to the
// push, another payment's receipt, late failures), requests stored again
// as stkgate-admin dlq replay does past the duplicate window (of final
// payments, one with its attempt record purged, and of payments in
// flight), and the same guarantees
// asserted as the full run. It takes about a minute. STKGATE_CHAOS_SEED
// repeats a run whose seed a failure printed. STKGATE_CHAOS=0 skips
// it (a machine without Postgres's binaries, say); nothing else does: a
// failure here is a payment lost or prompted twice, never to be waved away.
func TestChaosSmall(t *testing.T) {
	if os.Getenv("STKGATE_CHAOS") == "0" {
		t.Skip("STKGATE_CHAOS=0")
	}
	if testing.Short() {
		t.Skip("starts the whole system as processes")
	}
	root, bin := builtBinaries(t)
	var out bytes.Buffer
	o := Options{
		Root: root, Bin: bin, N: 150, Clients: 6, Rate: 10, Kills: 1,
		PGStop: 2 * time.Second, Down: time.Second, Settle: 90 * time.Second,
		Seed: chaosSeed(t), SimDelay: 500 * time.Millisecond, Replays: 20,
		// PGNoSync: fsync, synchronous_commit and full_page_writes off.
		// The run stops Postgres with a fast shutdown, which writes the
		// WAL out (a failed stop fails the run), and never the machine: no
		// commit can be lost. A fault that kills Postgres (-9) would need
		// them on.
		Faults: "quick", Latency: 300 * time.Millisecond, PGNoSync: true,
		Dispatchers: 2, ConsumerDeletes: 1, CallbackCrash: 0.03, OAuthFaults: 1, Forgeries: 12, RequestReplays: 6,
		// The reconciler's waits shortened so that the run settles within
		// a minute: by default a success learnt by query waits for its
		// receipt, and an ambiguous push for its callback, a prompt's
		// lifetime (3 min) before anything is decided.
		ExtraEnv: map[string]string{
			"DISPATCH_RETRY_MAX":         "10s",
			"RECONCILE_AFTER":            "3s",
			"RECONCILE_RECEIPT_WAIT":     "10s",
			"RECONCILE_PROMPT_LIFETIME":  "20s",
			"RECONCILE_REQUEST_DEADLINE": "35s",
			"RECONCILE_UNKNOWN_DEADLINE": "30s",
			// A callback held for confirmation is looked at again after
			// waits doubling from 5 s: up to a minute, by default, after
			// its payment ended, and the run settles only once none is
			// held. 10 s at most keeps that tail short.
			"RECONCILE_QUERY_MAX_INTERVAL": "10s",
			// A forged fast failure must reach callback-ingest within this
			// of its push, and the forger learns of the push from its
			// events: on a loaded machine (CI at load average 25) they came
			// later than the default 2 s allowed, and none was sent.
			"CALLBACK_FAST_FAILURE": "5s",
		},
		Out: &out,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("run (seed %d): %v\n%s", o.Seed, err, out.String())
	}
	rep.Print(&out)
	t.Log("\n" + out.String())
	for _, f := range rep.Failures {
		t.Errorf("seed %d: %s", o.Seed, f)
	}
	if q := rep.RequestReplays; q.Finished == 0 || q.InFlight == 0 || q.RecordGone == 0 {
		t.Errorf("seed %d: requests stored again: %d finished, %d in flight, %d with the attempt record purged; want some of each, or the replays went untested",
			o.Seed, q.Finished, q.InFlight, q.RecordGone)
	}
	if rep.Forgeries.FastFailures == 0 || rep.Forgeries.EarlyFailures == 0 {
		t.Errorf("seed %d: forged fast failures delivered: %d at stk.dispatched, %d before it; want some of each, or the forgeries went untested",
			o.Seed, rep.Forgeries.FastFailures, rep.Forgeries.EarlyFailures)
	}
}

// chaosSeed is STKGATE_CHAOS_SEED, to repeat a run a failure printed, else
// the clock's.
func chaosSeed(t *testing.T) uint64 {
	s := os.Getenv("STKGATE_CHAOS_SEED")
	if s == "" {
		return uint64(time.Now().UnixNano())
	}
	seed, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("STKGATE_CHAOS_SEED=%q: %v", s, err)
	}
	return seed
}

const (
	id1 = "00000000-0000-7000-8000-000000000001"
	id2 = "00000000-0000-7000-8000-000000000002"
	id3 = "00000000-0000-7000-8000-000000000003"
	id4 = "00000000-0000-7000-8000-000000000004"
)

// shared is a phone several requests of a run use.
const shared = "254700007777"

func push(phone, id, code string, accepted bool) darajatest.Push {
	return darajatest.Push{Accepted: accepted, ResultCode: code,
		Body: darajatest.PushBody{PhoneNumber: phone, CallBackURL: events.CallbackURL("http://127.0.0.1:1", id, "tok")}}
}

func delivered(id, code string, status int) darajatest.CallbackDelivery {
	return darajatest.CallbackDelivery{URL: events.CallbackURL("http://127.0.0.1:1", id, "tok"), ResultCode: code, StatusCode: status}
}

// paid is the fake's success callback for id, paid with receipt, as
// daraja-sim records it.
func paid(t *testing.T, id, receipt string, status int) darajatest.CallbackDelivery {
	t.Helper()
	body, err := darajatest.CallbackJSON(darajatest.Callback{CheckoutRequestID: "ws_CO_" + id, ResultCode: "0", Amount: 10,
		Receipt: receipt, Phone: "254700000001", TransactionDate: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	d := delivered(id, "0", status)
	d.Body = body
	return d
}

// TestAnalyse pins what the checker counts, so that a PASS means what it
// says: every failure kind is detected, and a clean run has none.
func TestAnalyse(t *testing.T) {
	a1 := answer{phone: "254700000001", status: 202, trackingID: id1}
	a2 := answer{phone: "254700000002", status: 202, trackingID: id2}
	refused := answer{phone: "254700000003", status: 503}
	unknown := answer{phone: "254700000004", err: "connection reset"}
	final := func(code, source string) row { return row{status: 1, responseCode: code, source: source} }

	tests := []struct {
		name    string
		answers []answer
		rows    map[string]row
		rec     simRecordings
		want    map[string]int
		fails   []string // substrings, one per failure, in order
		// holders flagged RECEIPT DISPUTED in the dispatchers' logs
		disputed map[string]bool
		// payments the forger posted a late failure for
		lateForged map[string]bool
	}{{
		name:    "clean",
		answers: []answer{a1, a2, refused, unknown},
		rows:    map[string]row{id1: final("0", "callback"), id2: final("1032", "query"), id3: final("0", "callback")},
		rec: simRecordings{
			Pushes:    []darajatest.Push{push(a1.phone, id1, "0", true), push(a2.phone, id2, "1032", true), push(unknown.phone, id3, "0", true)},
			Callbacks: []darajatest.CallbackDelivery{delivered(id1, "0", 200), delivered(id2, "1032", 0)},
		},
		want: map[string]int{"accepted": 2, "final": 2, "503": 1, "noanswer": 1, "accepted pushes": 3, "delivered": 1},
	}, {
		name:    "lost, double push, 503 pushed, callback not reflected",
		answers: []answer{a1, a2, refused},
		rows:    map[string]row{id1: final("1", "callback"), id2: {status: 0}},
		rec: simRecordings{
			Pushes: []darajatest.Push{
				push(a1.phone, id1, "0", true), push(a1.phone, id1, "1", true),
				push(refused.phone, id3, "0", true),
				push(a2.phone, id2, "0", false), // refused by Daraja: not a prompt
			},
			Callbacks: []darajatest.CallbackDelivery{delivered(id1, "0", 200)},
		},
		want:  map[string]int{"accepted": 2, "final": 1, "lost": 1, "not final": 1, "503": 1, "accepted pushes": 3, "doubles": 1, "pushed503": 1, "delivered": 1, "unreflected": 1, "paid otherwise": 2},
		fails: []string{"1 accepted requests never reached", "1 records were not final", "1 tracking ids prompted their customer more than once", "2 payments paid at the fake are recorded other than", "1 requests answered 503 were pushed", "1 callbacks answered 200 are not reflected"},
	}, {
		// A keyed request retried after a lost answer must keep its
		// tracking id: a second id prompting the same phone is a second
		// payment. A 503 "not confirmed" may have been sent: counted, not
		// a failure.
		name: "keyed retry made a second payment; unconfirmed 503 pushed",
		answers: []answer{
			{phone: "254700000001", keyed: true, attempts: 2, status: 202, trackingID: id1},
			{phone: "254700000002", keyed: true, attempts: 3, status: 503, message: msgUnconfirmed},
		},
		rows: map[string]row{id1: final("0", "callback"), id2: final("0", "callback"), id3: final("0", "callback")},
		rec: simRecordings{Pushes: []darajatest.Push{
			push("254700000001", id2, "0", true), push("254700000001", id1, "0", true),
			push("254700000002", id3, "0", true),
		}},
		want:  map[string]int{"accepted": 1, "final": 1, "accepted pushes": 3, "keyed": 2, "retried": 2, "retried accepted": 1, "unconfirmed": 1, "pushed unconfirmed": 1, "phones twice": 1},
		fails: []string{"1 payments were prompted beyond the requests that could have made them (a keyed retry must not make a second payment): *********001: prompted for [" + id2 + "], which no 2xx named"},
	}, {
		// Daraja's gateway answered 503 after processing the push; the
		// retry found the subscriber locked by that very prompt: one
		// prompt, not two.
		name:    "503 after accept, then locked: one prompt",
		answers: []answer{a1},
		rows:    map[string]row{id1: final("0", "callback")},
		rec: simRecordings{Pushes: []darajatest.Push{
			{Accepted: true, HTTPStatus: 503, ResultCode: "0", Body: push(a1.phone, id1, "", true).Body},
			{Accepted: false, HTTPStatus: 500, ErrorCode: "500.001.1001", Body: push(a1.phone, id1, "", false).Body},
		}},
		want: map[string]int{"accepted": 1, "final": 1, "accepted pushes": 1},
	}, {
		name:    "503 after accept, then a second real prompt",
		answers: []answer{a1},
		rows:    map[string]row{id1: final("0", "callback")},
		rec: simRecordings{Pushes: []darajatest.Push{
			{Accepted: true, HTTPStatus: 503, ResultCode: "0", Body: push(a1.phone, id1, "", true).Body},
			push(a1.phone, id1, "0", true),
		}},
		want:  map[string]int{"accepted": 1, "final": 1, "accepted pushes": 2, "doubles": 1},
		fails: []string{"1 tracking ids prompted their customer more than once"},
	}, {
		// Three payments to one phone, each prompted once, are three
		// payments, not a phone prompted three times; a fourth payment
		// prompted on it is one no request made.
		name: "shared phone",
		answers: []answer{
			{phone: shared, status: 202, trackingID: id1},
			{phone: shared, status: 202, trackingID: id2},
			{phone: shared, keyed: true, attempts: 2, status: 202, trackingID: id3},
		},
		rows: map[string]row{id1: final("0", "callback"), id2: final("0", "query"), id3: final("0", "callback"), id4: final("0", "callback")},
		rec: simRecordings{Pushes: []darajatest.Push{
			push(shared, id1, "0", true), push(shared, id2, "0", false), push(shared, id2, "0", true),
			push(shared, id3, "0", true), push(shared, id4, "0", true),
		}},
		want:  map[string]int{"accepted": 3, "final": 3, "accepted pushes": 4, "keyed": 1, "retried": 1, "retried accepted": 1, "phones twice": 1},
		fails: []string{"1 payments were prompted beyond the requests"},
	}, {
		// Every record must be final, also one whose request's answer was
		// lost; and a payment the customer made must read Success, or
		// Unknown where stkgate could not learn it, never Failed.
		name:    "not final, and paid but recorded otherwise",
		answers: []answer{a1, a2, unknown, {phone: shared, status: 202, trackingID: id4}},
		rows: map[string]row{
			id1: final("1032", "query"),                   // the customer paid: Cancelled is wrong
			id2: final(events.CodeNoAnswer, "dispatcher"), // Unknown: allowed
			id3: {status: 0, source: "api"},               // the lost answer's record, never finished
			id4: final("stkgate.refused", "dispatcher"),   // refused, never prompted: not paid
		},
		rec: simRecordings{Pushes: []darajatest.Push{
			push(a1.phone, id1, "0", true), push(a2.phone, id2, "0", true), push(unknown.phone, id3, "0", true),
			push(shared, id4, "", false),
		}},
		want:  map[string]int{"accepted": 3, "final": 3, "noanswer": 1, "accepted pushes": 3, "not final": 1, "paid otherwise": 1, "never prompted": 1},
		fails: []string{"1 records were not final at the end: " + id3, "1 payments paid at the fake are recorded other than Success or Unknown: " + id1 + ": recorded Cancelled by User"},
	}, {
		// Forgeries that the defences of issue 9 stopped: id1's forged
		// fast failure held for the query (Success stands); id2's forged
		// success with id1's receipt answered by the query (no receipt);
		// id3, ended Unknown without its callback, keeps a forged late
		// failure (not covered by design: counted, not judged); id4 ended
		// Unknown and its late success replaced the forged failure: its
		// delivered callback is reflected by the late result.
		name:    "forgeries stopped",
		answers: []answer{a1, a2, {phone: "254700000005", status: 202, trackingID: id3}, {phone: "254700000006", status: 202, trackingID: id4}},
		rows: map[string]row{
			id1: {status: 1, responseCode: "0", source: "callback", receipt: "RCPT0001"},
			id2: final("0", "query"),
			id3: {status: 1, responseCode: events.CodeNoAnswer, source: "reconciler", lateCode: "1032"},
			id4: {status: 1, responseCode: events.CodeNoAnswer, source: "reconciler", lateCode: "0"},
		},
		rec: simRecordings{
			Pushes: []darajatest.Push{push(a1.phone, id1, "0", true), push(a2.phone, id2, "0", true),
				push("254700000005", id3, "0", true), push("254700000006", id4, "0", true)},
			Callbacks: []darajatest.CallbackDelivery{paid(t, id1, "RCPT0001", 200), paid(t, id2, "RCPT0002", 200),
				paid(t, id4, "RCPT0004", 200)},
		},
		want: map[string]int{"accepted": 4, "final": 4, "accepted pushes": 4, "delivered": 3, "paid late failure": 1},
	}, {
		// id1 holds the receipt Daraja paid id2 with: a forged success
		// counted. id3 holds id2's too but was flagged RECEIPT DISPUTED.
		name:    "receipt on another payment",
		answers: []answer{a1, a2, {phone: "254700000005", status: 202, trackingID: id3}},
		rows: map[string]row{
			id1: {status: 1, responseCode: "0", source: "callback", receipt: "RCPT0002"},
			id2: final("0", "query"),
			id3: {status: 1, responseCode: "0", source: "callback", receipt: "rcpt0002"},
		},
		rec: simRecordings{
			Pushes:    []darajatest.Push{push(a1.phone, id1, "0", true), push(a2.phone, id2, "0", true), push("254700000005", id3, "1032", true)},
			Callbacks: []darajatest.CallbackDelivery{paid(t, id2, "RCPT0002", 0)},
		},
		disputed: map[string]bool{id3: true},
		want:     map[string]int{"accepted": 3, "final": 3, "accepted pushes": 3, "receipt elsewhere": 2, "receipt unflagged": 1},
		fails:    []string{"1 records hold a receipt Daraja paid another payment with, unflagged (no RECEIPT DISPUTED): " + id1 + " holds RCPT0002, which Daraja paid " + id2},
	}, {
		// A forged late 1032 stood although Daraja's success for the
		// payment ended Unknown reached callback-ingest; and a forged
		// fast failure turned a paid payment Failed.
		name:    "late failure over a delivered success; paid recorded failed",
		answers: []answer{a1, a2},
		rows: map[string]row{
			id1: {status: 1, responseCode: events.CodeNoAnswer, source: "reconciler", lateCode: "1032"},
			id2: final("1037", "callback"),
		},
		rec: simRecordings{
			Pushes:    []darajatest.Push{push(a1.phone, id1, "0", true), push(a2.phone, id2, "0", true)},
			Callbacks: []darajatest.CallbackDelivery{paid(t, id1, "RCPT0001", 200)},
		},
		want: map[string]int{"accepted": 2, "final": 2, "accepted pushes": 2, "delivered": 1, "unreflected": 1, "paid otherwise": 1,
			"paid late failure": 1, "paid late failure delivered": 1},
		fails: []string{"1 payments paid at the fake are recorded other than Success or Unknown: " + id2,
			"1 callbacks answered 200 are not reflected",
			"1 paid payments ended Unknown show a late failure although Daraja's success was delivered: " + id1},
	}, {
		// Daraja's late 1019 came after the forger's late 1032 for a
		// payment ended Unknown: the first late failure stands, by
		// design, and neither pays anyone. Without a forgery the same
		// record fails the run.
		name:    "late failure pre-empted by a forged one",
		answers: []answer{a1, a2},
		rows: map[string]row{
			id1: {status: 1, responseCode: events.CodeNoAnswer, source: "reconciler", lateCode: "1032"},
			id2: {status: 1, responseCode: events.CodeNoAnswer, source: "reconciler", lateCode: "1032"},
		},
		rec: simRecordings{
			Pushes:    []darajatest.Push{push(a1.phone, id1, "1019", true), push(a2.phone, id2, "1019", true)},
			Callbacks: []darajatest.CallbackDelivery{delivered(id1, "1019", 200), delivered(id2, "1019", 200)},
		},
		lateForged: map[string]bool{id1: true},
		want:       map[string]int{"accepted": 2, "final": 2, "accepted pushes": 2, "delivered": 2, "unreflected": 1, "preempted": 1},
		fails:      []string{"1 callbacks answered 200 are not reflected in their record: " + id2},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := analyse(Options{}, tt.answers, tt.rows, tt.rec, tt.disputed, tt.lateForged)
			r.judge()
			got := map[string]int{"accepted": r.Accepted, "final": r.Final, "lost": r.Lost, "503": r.Refused503,
				"noanswer": r.NoAnswer, "accepted pushes": r.AcceptedPushes, "doubles": r.DoublePushes,
				"pushed503": r.Pushed503, "delivered": r.CallbacksDelivered, "unreflected": r.CallbacksUnreflected,
				"keyed": r.Keyed, "retried": r.KeyedRetried, "retried accepted": r.KeyedRetriedAccepted,
				"unconfirmed": r.Unconfirmed503, "pushed unconfirmed": r.PushedUnconfirmed, "phones twice": r.PhonesPromptedTwice,
				"never prompted": r.FinalNeverPrompted, "not final": r.NotFinal, "paid otherwise": r.PaidNotRecorded,
				"receipt elsewhere": r.ReceiptElsewhere, "receipt unflagged": r.ReceiptElsewhereUnflagged,
				"paid late failure": r.PaidLateFailure, "paid late failure delivered": r.PaidLateFailureDelivered,
				"preempted": r.PreemptedByForgery}
			for k, v := range got {
				if v == 0 && tt.want[k] == 0 {
					delete(got, k)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("figures (-want +got):\n%s", diff)
			}
			if len(r.Failures) != len(tt.fails) {
				t.Fatalf("failures = %q, want %d", r.Failures, len(tt.fails))
			}
			for i, f := range tt.fails {
				if !strings.Contains(r.Failures[i], f) {
					t.Errorf("failure %d = %q, want it to say %q", i, r.Failures[i], f)
				}
			}
		})
	}
}

func TestJudgeProcesses(t *testing.T) {
	r := &Report{Accepted: 1, Procs: []procFigures{
		{Name: "api", Kills: 2, Survived: 2, Running: true},
		{Name: "dispatcher", Kills: 2, Survived: 1, Running: true},
		{Name: "projector", Kills: 1, Survived: 1, Running: false},
	}}
	r.judge()
	want := []string{
		"dispatcher survived 1 of 2 kills (running at the end: true)",
		"projector survived 1 of 1 kills (running at the end: false)",
	}
	if diff := cmp.Diff(want, r.Failures); diff != "" {
		t.Errorf("failures (-want +got):\n%s", diff)
	}
}

// TestPhones: every request has a phone of its own (so that a push can be
// traced to its request even without a tracking id), except one in twenty,
// which shares its phone with two others; every phone is valid for Daraja,
// and one in ten chooses a failure outcome, no shared one.
func TestPhones(t *testing.T) {
	users := map[string][]int{}
	failing := 0
	for i := range 2000 {
		p := phoneFor(i)
		if len(p) != 12 || !strings.HasPrefix(p, "2547") {
			t.Fatalf("phoneFor(%d) = %q", i, p)
		}
		users[p] = append(users[p], i)
		if code, _ := darajatest.OutcomeFor(p); code != "0" {
			failing++
			if i%20 == 18 {
				t.Errorf("shared phoneFor(%d) = %q chooses failure %s", i, p, code)
			}
		}
	}
	if failing != 200 {
		t.Errorf("%d of 2000 phones choose a failure, want 200", failing)
	}
	sharedBy := map[int]int{} // requests on a phone → phones
	for p, is := range users {
		sharedBy[len(is)]++
		if len(is) > 1 {
			for _, i := range is {
				if i%20 != 18 {
					t.Errorf("phone %q of request %d shared by %v", p, i, is)
				}
			}
		}
	}
	if diff := cmp.Diff(map[int]int{1: 1901, 3: 33}, sharedBy); diff != "" {
		t.Errorf("phones by number of requests (-want +got):\n%s", diff)
	}
}

func TestTrackingIDOf(t *testing.T) {
	for in, want := range map[string]string{
		events.CallbackURL("http://127.0.0.1:9/base/", id1, "tok"): id1,
		events.CallbackURL("http://127.0.0.1:9/base/", id2, ""):    id2,
		"http://127.0.0.1:9/elsewhere":                             "",
	} {
		if got := trackingIDOf(in); got != want {
			t.Errorf("trackingIDOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-n", "10", "-seed", "7", "-root", "/r", "-env", "A=b=c", "-env", "RECONCILE_AFTER=1s",
		"-dispatchers", "3", "-consumer-deletes", "1", "-callback-crash", "0.5", "-oauth-faults", "0", "-request-replays", "4"})
	if err != nil {
		t.Fatal(err)
	}
	if o.N != 10 || o.Seed != 7 || o.Root != "/r" || o.Dispatchers != 3 || o.ConsumerDeletes != 1 || o.CallbackCrash != 0.5 || o.OAuthFaults != 0 || o.RequestReplays != 4 {
		t.Errorf("got %+v", o)
	}
	if diff := cmp.Diff(map[string]string{"A": "b=c", "RECONCILE_AFTER": "1s"}, o.ExtraEnv); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	for _, bad := range [][]string{{"-n", "0"}, {"-env", "novalue"}, {"-rate", "-1"}, {"-dispatchers", "0"}, {"-callback-crash", "1.5"}, {"-consumer-deletes", "-1"}, {"-forgeries", "-1"}, {"-request-replays", "-1"}} {
		if _, err := parseFlags(append(bad, "-root", "/r")); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

// TestDarajaSim runs the daraja-sim command as a process and checks that
// its recordings say what the fake was sent and what its callbacks got.
func TestDarajaSim(t *testing.T) {
	_, dir := builtBinaries(t)
	bin := filepath.Join(dir, "daraja-sim")
	got := make(chan string, 1)
	hook := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.Path
	})}
	ln := listen(t)
	go func() { _ = hook.Serve(ln) }()
	defer hook.Close()

	var log bytes.Buffer
	url, control, stop, err := binaries.StartSim(context.Background(), bin, 0, &lockedWriter{w: &log}, "-answer-latency", "50ms")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	// Through the latency proxy: a push refused once for spike arrest is
	// retryable; a reset after Daraja processed the push reaches the client
	// as a reset (ambiguous), not as an answer of the proxy's own.
	if err := postScripts(context.Background(), control, []script{
		{Phone: "254708375000", FailFirst: []string{"spike-arrest"}},
		{Phone: "254708375001", FailFirst: []string{"reset-after-accept"}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := sendPush(url, "254708375000", events.CallbackURL("http://"+ln.Addr().String(), id1, "")); daraja.KindOf(err) != daraja.KindTransient {
		t.Fatalf("scripted spike arrest: %v (%v), want a transient error", err, daraja.KindOf(err))
	}
	if err := sendPush(url, "254708375000", events.CallbackURL("http://"+ln.Addr().String(), id1, "")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != events.CallbackPath+id1 {
			t.Errorf("callback to %q", p)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no callback")
	}
	if err := sendPush(url, "254708375001", events.CallbackURL("http://"+ln.Addr().String(), id2, "")); err == nil || daraja.KindOf(err) != daraja.KindAmbiguous {
		t.Fatalf("scripted reset after accept: %v (%v), want an ambiguous error", err, daraja.KindOf(err))
	}
	select {
	case p := <-got:
		if p != events.CallbackPath+id2 {
			t.Errorf("callback to %q", p)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no callback of the push whose answer was reset")
	}
	var rec simRecordings
	deadline := time.Now().Add(10 * time.Second)
	for {
		if rec, err = recordings(context.Background(), control); err != nil {
			t.Fatal(err)
		}
		// The fake records a push as its handler returns, which for the
		// reset one can come after its callback was delivered and recorded
		// (CI saw two callbacks and two pushes).
		if len(rec.Callbacks) == 2 && len(rec.Pushes) == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var pushes []string
	for _, p := range rec.Pushes {
		pushes = append(pushes, fmt.Sprintf("%s %v %s", p.Body.PhoneNumber, p.Accepted, trackingIDOf(p.Body.CallBackURL)))
	}
	want := []string{"254708375000 false " + id1, "254708375000 true " + id1, "254708375001 true " + id2}
	if diff := cmp.Diff(want, pushes); diff != "" {
		t.Errorf("pushes (-want +got):\n%s", diff)
	}
	var callbacks []string
	for _, c := range rec.Callbacks {
		callbacks = append(callbacks, fmt.Sprintf("%s %d %s", trackingIDOf(c.URL), c.StatusCode, c.ResultCode))
	}
	if diff := cmp.Diff([]string{id1 + " 200 0", id2 + " 200 0"}, callbacks); diff != "" {
		t.Errorf("callbacks (-want +got):\n%s", diff)
	}

	// OAuth faults: the next token request fails, the one after it works.
	if err := postOAuthFaults(context.Background(), control, 1, "no-such-kind"); err == nil {
		t.Error("an unknown OAuth fault was taken")
	}
	if err := postOAuthFaults(context.Background(), control, 1, oauthFaultKinds[1]); err != nil {
		t.Fatal(err)
	}
	if err := sendPush(url, "254708375002", events.CallbackURL("http://"+ln.Addr().String(), id3, "")); err == nil {
		t.Error("a push went through while the token request was scripted to fail")
	}
	if err := sendPush(url, "254708375002", events.CallbackURL("http://"+ln.Addr().String(), id3, "")); err != nil {
		t.Errorf("the push after the OAuth fault: %v", err)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// sendPush sends one push through the real Daraja client, as the
// dispatcher would.
func sendPush(baseURL, phone, callbackURL string) error {
	c, err := daraja.New(daraja.Config{BaseURL: baseURL, ConsumerKey: darajatest.DefaultConsumerKey,
		ConsumerSecret: darajatest.DefaultConsumerSecret, ShortCode: darajatest.DefaultShortCode, PassKey: darajatest.DefaultPassKey})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.Push(ctx, daraja.PushRequest{Phone: phone, Amount: 10, AccountReference: "SIM1", CallbackURL: callbackURL})
	return err
}

// TestFaultScripts: "quick" scripts only faults that resolve without waiting
// out a prompt's lifetime, "full" adds the ambiguous ones, and every
// scripted phone is one of the run's.
func TestFaultScripts(t *testing.T) {
	kinds := func(mode string) map[string]int {
		out := map[string]int{}
		for _, sc := range faultScripts(400, mode) {
			out[sc.kind()]++
		}
		return out
	}
	quick := map[string]int{"service-unavailable": 20, "too-many-requests+spike-arrest": 10, "quota": 10, "locked": 20, "no-callback": 20,
		"html-404": 10, "html-403": 10, "unauthorized-empty": 10, "nul-message": 10}
	if diff := cmp.Diff(quick, kinds("quick")); diff != "" {
		t.Errorf("quick (-want +got):\n%s", diff)
	}
	full := map[string]int{"reset-after-accept": 10, "internal-after-accept": 20, "timeout-after-accept": 10, "reset-after-read": 10, "internal-500.003.1001": 10}
	for k, v := range quick {
		full[k] += v
	}
	full["service-unavailable-after-accept"] = 20
	if diff := cmp.Diff(full, kinds("full")); diff != "" {
		t.Errorf("full (-want +got):\n%s", diff)
	}
	if got := faultScripts(400, "none"); got != nil {
		t.Errorf("none scripted %d", len(got))
	}
	for _, sc := range faultScripts(400, "full") {
		if strings.HasSuffix(sc.Phone, "7777") {
			t.Errorf("shared phone %s scripted %s", sc.Phone, sc.kind())
		}
	}
}

// TestFailpointExitRestarts: a process that exits with failpoint.ExitCode
// crashed where the run asked it to; it is restarted at once, every time,
// and counted apart from exits of its own.
func TestFailpointExitRestarts(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	var log bytes.Buffer
	p := &proc{name: "crasher", path: sh, args: []string{"-c", fmt.Sprintf("exit %d", failpoint.ExitCode)},
		log: &lockedWriter{w: &log}}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	defer p.stop(time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		p.mu.Lock()
		crashes, self := p.failpointExits, p.selfExits
		p.mu.Unlock()
		if self != 0 {
			t.Fatalf("%d exits counted as the process's own", self)
		}
		if crashes >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted after %d failpoint crashes in 20 s, want 3", crashes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExitAfterAKillIsRestarted: an instance started after a kill -9 that
// exits at once (a failed start) is restarted as any exit of its own,
// counted, and the kill is survived once an instance stays up.
func TestExitAfterAKillIsRestarted(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	// The first instance runs; the second (the first after the kill)
	// exits at once; the third runs.
	marks := t.TempDir()
	script := fmt.Sprintf(`n=$(ls %[1]s | wc -l); touch %[1]s/$n; if [ "$n" = 1 ]; then exit 1; fi; exec sleep 60`, marks)
	var log bytes.Buffer
	p := &proc{name: "flaky", path: sh, args: []string{"-c", script}, log: &lockedWriter{w: &log}}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	defer p.stop(time.Second)
	if err := p.waitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.kill9(context.Background(), 0, nil); err != nil {
		t.Fatalf("kill9: %v\n%s", err, log.String())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kills != 1 || p.survived != 1 || p.selfExits != 1 {
		t.Errorf("kills %d survived %d exits of its own %d, want 1 1 1\n%s", p.kills, p.survived, p.selfExits, log.String())
	}
}
