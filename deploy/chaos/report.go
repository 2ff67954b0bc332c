package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Report holds a run's figures. Failures lists every broken guarantee;
// a run passed when it is empty.
type Report struct {
	Seed                 uint64
	Requests             int
	Accepted             int            // 2xx with a tracking id
	Refused503           int            // 503: the api said it could not make the request durable
	Unconfirmed503       int            // 503 "could not be confirmed": a request whose publish had an unknown outcome
	PushedUnconfirmed    int            // of those, prompted anyway
	Keyed                int            // requests sent with an Idempotency-Key
	KeyedRetried         int            // of those, sent more than once
	KeyedRetriedAccepted int            // of those, accepted in the end
	PhonesPromptedTwice  int            // payments prompted beyond the requests that may have made them (a keyed retry's second payment)
	OtherStatus          map[int]int    // other HTTP answers, by status
	NoAnswer             int            // transport errors and timeouts: outcome unknown to the client
	Final                int            // accepted and status 1 in Postgres
	Lost                 int            // accepted and not final after the settle deadline
	LostIDs              []string       // the first few
	LostByCause          map[string]int // what the fake and Postgres say of each lost request
	NotFinal             int            // records in Postgres (accepted or not) not final at the end
	NotFinalIDs          []string       // the first few
	PaidNotRecorded      int            // paid at the fake, recorded other than Success or Unknown
	PaidNotRecordedIDs   []string       // the first few
	NotFoundAfterAccept  int            // GET right after a 2xx answered 404
	FinalNeverPrompted   int            // accepted and final without any push Daraja accepted (failed before a prompt)
	NeverPromptedByCode  map[string]int // of those, by response code
	Pushes               int            // push requests the fake received
	AcceptedPushes       int            // pushes Daraja accepted: prompts shown to a customer
	DoublePushes         int            // tracking ids whose customer was prompted more than once
	DoublePushIDs        []string       // the first few, with counts
	PromptedTwiceOn      []string       // the first few phones prompted beyond their requests, with the ids no answer named
	Pushed503            int            // requests answered 503 whose phone was prompted
	PushedUnaccounted    int            // accepted pushes for no request of this run
	CallbacksSent        int            // callbacks the fake tried to deliver
	CallbacksDelivered   int            // of those, answered 200
	CallbacksUnreflected int            // delivered (200) but the record's response_code differs
	UnreflectedIDs       []string       // the first few
	// PreemptedByForgery are Daraja's late failures (answered 200) whose
	// payment shows the forger's late failure, stored first: by design.
	PreemptedByForgery int
	OutcomeMismatches  int            // final record whose code differs from its single accepted push's outcome
	MismatchIDs        []string       // the first few
	Queries            int            // STK queries the fake answered
	Forgeries          forgeryFigures // forged callbacks sent (Options.Forgeries)
	// RequestReplays are the requests stored again (Options.RequestReplays);
	// RequestReplayChanged, the finished ones among them whose record
	// changed since (all of them, not the first few).
	RequestReplays       requestReplayFigures
	RequestReplayChanged []string
	// Records whose receipt the fake paid another payment with (a forged
	// success's, say), and of those the ones no reconciler flagged RECEIPT
	// DISPUTED: a receipt must stay on the payment Daraja paid with it.
	ReceiptElsewhere, ReceiptElsewhereUnflagged int
	ReceiptElsewhereIDs                         []string // the first few unflagged
	// Payments paid at the fake that stkgate ended Unknown and whose
	// meta.late_result reads a failure; of those, the ones whose genuine
	// callback was delivered (200), which a late success must replace.
	PaidLateFailure, PaidLateFailureDelivered int
	PaidLateFailureIDs                        []string       // the first few delivered
	FinalBySource                             map[string]int // who decided the outcome of the accepted requests
	Replayed                                  int            // delivered callbacks sent again
	ReplayChanged                             int            // records a repeated callback changed
	PGStops                                   int
	ConsumerDeletes                           int // the dispatcher's consumer deleted through the NATS API
	ConsumerDeletesAsked                      int
	OAuthFaults                               map[string]int // OAuth failures scripted, by kind
	Procs                                     []procFigures
	ChaosErrors                               []string
	LoadTook, SettleTook                      time.Duration
	Cluster                                   *clusterFigures // the cluster run's; nil in a chaos run
	Failures                                  []string
}

// msgUnconfirmed is api.MsgUnconfirmed and msgUnknownOutcome
// api.MsgUnknownOutcome: 503s that cannot say nothing was sent, the first
// for a keyed request, the second (with the tracking id) for one without a
// key (copied, as the chaos runner talks to the api only over HTTP).
const (
	msgUnconfirmed    = "The request could not be confirmed right now. Retry with the same Idempotency-Key: it will not be sent twice."
	msgUnknownOutcome = "The request could not be confirmed right now: it may have been accepted under tracking_id. GET it before retrying (404: it was not accepted), or send an Idempotency-Key to retry safely."
)

type procFigures struct {
	Name      string
	Kills     int
	Survived  int
	SelfExits int
	// FailpointExits: exits at a failpoint (failpoint.ExitCode), each
	// followed by a restart; not counted in SelfExits.
	FailpointExits int
	Running        bool
}

// judge lists the broken guarantees (issues 3, 8 and 9).
func (r *Report) judge() {
	fail := func(format string, args ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, args...)) }
	if r.Lost > 0 {
		fail("%d accepted requests never reached a final state (lost): %s", r.Lost, strings.Join(r.LostIDs, ", "))
	}
	if r.NotFinal > 0 {
		fail("%d records were not final at the end: %s", r.NotFinal, strings.Join(r.NotFinalIDs, ", "))
	}
	if r.DoublePushes > 0 {
		fail("%d tracking ids prompted their customer more than once: %s", r.DoublePushes, strings.Join(r.DoublePushIDs, ", "))
	}
	if r.PaidNotRecorded > 0 {
		fail("%d payments paid at the fake are recorded other than Success or Unknown: %s", r.PaidNotRecorded, strings.Join(r.PaidNotRecordedIDs, "; "))
	}
	if r.PhonesPromptedTwice > 0 {
		fail("%d payments were prompted beyond the requests that could have made them (a keyed retry must not make a second payment): %s",
			r.PhonesPromptedTwice, strings.Join(r.PromptedTwiceOn, "; "))
	}
	if r.Pushed503 > 0 {
		fail("%d requests answered 503 were pushed anyway", r.Pushed503)
	}
	if r.CallbacksUnreflected > 0 {
		fail("%d callbacks answered 200 are not reflected in their record: %s", r.CallbacksUnreflected, strings.Join(r.UnreflectedIDs, "; "))
	}
	if r.ReplayChanged > 0 {
		fail("%d records changed when a delivered callback was sent again", r.ReplayChanged)
	}
	if len(r.RequestReplayChanged) > 0 {
		fail("%d finished payments changed after their request was stored again (dlq replay): %s",
			len(r.RequestReplayChanged), strings.Join(firstFew(r.RequestReplayChanged), "; "))
	}
	if r.ReceiptElsewhereUnflagged > 0 {
		fail("%d records hold a receipt Daraja paid another payment with, unflagged (no RECEIPT DISPUTED): %s", r.ReceiptElsewhereUnflagged, strings.Join(r.ReceiptElsewhereIDs, "; "))
	}
	if r.PaidLateFailureDelivered > 0 {
		fail("%d paid payments ended Unknown show a late failure although Daraja's success was delivered: %s", r.PaidLateFailureDelivered, strings.Join(r.PaidLateFailureIDs, "; "))
	}
	if r.Accepted == 0 {
		fail("no request was accepted: the run measured nothing")
	}
	for _, p := range r.Procs {
		if p.Survived < p.Kills || !p.Running {
			fail("%s survived %d of %d kills (running at the end: %v)", p.Name, p.Survived, p.Kills, p.Running)
		}
	}
	for _, e := range r.ChaosErrors {
		fail("chaos: %s", e)
	}
}

// Print writes the figures.
func (r *Report) Print(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("=== stkgate chaos run, seed %d", r.Seed)
	p("requests posted             %d (load %s, settle %s)", r.Requests, r.LoadTook.Round(time.Second), r.SettleTook.Round(time.Second))
	p("  accepted (2xx)            %d", r.Accepted)
	p("  503                       %d", r.Refused503)
	p("  503 'not confirmed'       %d (may have been sent: %d were pushed)", r.Unconfirmed503, r.PushedUnconfirmed)
	p("  with Idempotency-Key      %d (retried %d, of which accepted in the end %d)", r.Keyed, r.KeyedRetried, r.KeyedRetriedAccepted)
	p("  no answer (conn error)    %d", r.NoAnswer)
	if len(r.OtherStatus) > 0 {
		p("  other statuses            %v", r.OtherStatus)
	}
	p("final (status 1)            %d   by source %v", r.Final, r.FinalBySource)
	p("  of which never prompted   %d (refused, given up, or failed at a deadline): %v", r.FinalNeverPrompted, r.NeverPromptedByCode)
	p("LOST (accepted, not final)  %d", r.Lost)
	causes := make([]string, 0, len(r.LostByCause))
	for c := range r.LostByCause {
		causes = append(causes, c)
	}
	sort.Strings(causes)
	for _, c := range causes {
		p("  %5d  %s", r.LostByCause[c], c)
	}
	p("NOT FINAL at the end        %d (every record in Postgres)", r.NotFinal)
	for _, id := range r.NotFinalIDs {
		p("  %s", id)
	}
	p("PAID, RECORDED OTHERWISE    %d (paid at the fake, recorded other than Success or Unknown)", r.PaidNotRecorded)
	for _, id := range r.PaidNotRecordedIDs {
		p("  %s", id)
	}
	p("404 right after 2xx         %d", r.NotFoundAfterAccept)
	p("pushes received / prompts   %d / %d", r.Pushes, r.AcceptedPushes)
	p("DOUBLE PUSHES (ids)         %d (payments whose customer was prompted more than once)", r.DoublePushes)
	p("requests prompted twice     %d (payments prompted beyond their phone's requests)", r.PhonesPromptedTwice)
	p("pushes for 503'd requests   %d", r.Pushed503)
	p("callbacks sent / 200        %d / %d", r.CallbacksSent, r.CallbacksDelivered)
	p("  200 but not reflected     %d", r.CallbacksUnreflected)
	p("  late failure pre-empted   %d (by a forged late failure stored first: by design)", r.PreemptedByForgery)
	p("  replayed / changed record %d / %d", r.Replayed, r.ReplayChanged)
	p("outcome != pushed outcome   %d", r.OutcomeMismatches)
	for _, m := range r.MismatchIDs {
		p("  %s", m)
	}
	p("STK queries                 %d", r.Queries)
	f := r.Forgeries
	p("forged callbacks (200)      fast failures %d of %d (before stk.dispatched %d), receipt thefts %d, late failures %d; not answered 200 %d",
		f.FastFailures+f.EarlyFailures, f.Asked, f.EarlyFailures, f.ReceiptThefts, f.LateFailures, f.Undelivered)
	p("  receipt on another payment %d (unflagged %d)", r.ReceiptElsewhere, r.ReceiptElsewhereUnflagged)
	for _, id := range r.ReceiptElsewhereIDs {
		p("    %s", id)
	}
	p("  paid Unknown, late failure %d (with Daraja's success delivered %d)", r.PaidLateFailure, r.PaidLateFailureDelivered)
	for _, id := range r.PaidLateFailureIDs {
		p("    %s", id)
	}
	q := r.RequestReplays
	p("requests stored again       %d of %d (dlq replay past the duplicate window): finished %d (attempt record purged %d: ended without a push %d, push log purged %d), in flight %d; finished records changed %d",
		q.Finished+q.InFlight, q.Asked, q.Finished, q.RecordGone, q.RecordGoneUnpushed, q.PushLogPurged, q.InFlight, len(r.RequestReplayChanged))
	for _, id := range firstFew(r.RequestReplayChanged) {
		p("  %s", id)
	}
	p("Postgres stops              %d", r.PGStops)
	p("dispatcher consumer deleted %d/%d", r.ConsumerDeletes, r.ConsumerDeletesAsked)
	p("OAuth faults scripted       %v", r.OAuthFaults)
	for _, f := range r.Procs {
		line := fmt.Sprintf("kills survived %-16s %d/%d (exits of its own: %d)", f.Name, f.Survived, f.Kills, f.SelfExits)
		if f.FailpointExits > 0 {
			line += fmt.Sprintf("; crashed at a failpoint and restarted: %d", f.FailpointExits)
		}
		p("%s", line)
	}
	if r.Cluster != nil {
		r.Cluster.print(w)
	}
	if len(r.Failures) == 0 {
		p("RESULT: PASS")
		return
	}
	p("RESULT: FAIL")
	for _, f := range r.Failures {
		p("  - %s", f)
	}
}
