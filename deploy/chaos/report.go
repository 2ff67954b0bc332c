package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/stkgate/stkgate/events"
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

// analyse computes a run's figures from the load's answers, the read model,
// the fake's recordings, and the holders of receipts the reconcilers
// flagged RECEIPT DISPUTED.
//
// lateForged are the payments the forger posted a late failure for.
func analyse(o Options, answers []answer, rows map[string]row, rec simRecordings, disputed, lateForged map[string]bool) *Report {
	c := newAnalysis(answers, rows, rec)
	c.lateForged = lateForged
	c.countAnswers()
	c.countPrompts()
	c.countPromptsPerPhone()
	c.countDoubles()
	c.checkRecords()
	c.checkCallbacks()
	c.checkOutcomes()
	c.r.Queries = len(rec.Queries)
	c.r.forgedOutcomes(rows, rec, c.byID, c.callbackOf, disputed)
	return c.r
}

// analysis is what analyse reads and what its steps share.
type analysis struct {
	r       *Report
	answers []answer
	rows    map[string]row
	rec     simRecordings

	pushedIDs  map[string]bool           // tracking ids with a prompt
	callbackOf map[string]int            // tracking id → best status its callbacks got (200 wins)
	phones     map[string]*phoneUse      // phone → what its requests got
	byID       map[string][]string       // tracking id → result codes of its prompts
	promptedOn map[string]map[string]int // phone → tracking id → prompts
	lateForged map[string]bool           // payments the forger posted a late failure for
}

func newAnalysis(answers []answer, rows map[string]row, rec simRecordings) *analysis {
	c := &analysis{
		r: &Report{Requests: len(answers), OtherStatus: map[int]int{}, FinalBySource: map[string]int{}, LostByCause: map[string]int{},
			NeverPromptedByCode: map[string]int{}},
		answers: answers, rows: rows, rec: rec,
		pushedIDs: map[string]bool{}, callbackOf: map[string]int{}, phones: map[string]*phoneUse{},
		byID: map[string][]string{}, promptedOn: map[string]map[string]int{},
	}
	for _, p := range rec.Pushes {
		if p.Accepted {
			c.pushedIDs[trackingIDOf(p.Body.CallBackURL)] = true
		}
	}
	for _, cb := range rec.Callbacks {
		id := trackingIDOf(cb.URL)
		if st, ok := c.callbackOf[id]; !ok || st != http.StatusOK {
			c.callbackOf[id] = cb.StatusCode
		}
	}
	return c
}

// countAnswers counts what each request got, and what each phone's
// requests got.
func (c *analysis) countAnswers() {
	for _, a := range c.answers {
		u := c.phones[a.phone]
		if u == nil {
			u = &phoneUse{accepted: map[string]bool{}}
			c.phones[a.phone] = u
		}
		if a.keyed {
			c.r.Keyed++
			if a.attempts > 1 {
				c.r.KeyedRetried++
				if a.trackingID != "" {
					c.r.KeyedRetriedAccepted++
				}
			}
		}
		switch {
		case a.trackingID != "":
			c.r.Accepted++
			u.accepted[a.trackingID] = true
			if a.getStatus == http.StatusNotFound {
				c.r.NotFoundAfterAccept++
			}
			row, ok := c.rows[a.trackingID]
			if ok && row.status == 1 {
				c.r.Final++
				c.r.FinalBySource[row.source]++
				if !c.pushedIDs[a.trackingID] {
					c.r.FinalNeverPrompted++
					c.r.NeverPromptedByCode[row.responseCode]++
				}
			} else {
				c.r.Lost++
				state := "no record in Postgres"
				if ok {
					state = "pending in Postgres"
				}
				cause := state + ", never pushed"
				if c.pushedIDs[a.trackingID] {
					switch st, sent := c.callbackOf[a.trackingID]; {
					case !sent:
						cause = state + ", pushed, no callback sent yet"
					case st == http.StatusOK:
						cause = state + ", pushed, callback answered 200"
					default:
						cause = state + fmt.Sprintf(", pushed, callback not delivered (status %d)", st)
					}
				}
				c.r.LostByCause[cause]++
				if len(c.r.LostIDs) < 10 {
					c.r.LostIDs = append(c.r.LostIDs, a.trackingID+" ("+cause+")")
				}
			}
		case a.status == http.StatusServiceUnavailable && (a.message == msgUnconfirmed || a.message == msgUnknownOutcome):
			c.r.Unconfirmed503++
			u.unconfirmed++
			u.mayHave++
		case a.status == http.StatusServiceUnavailable:
			c.r.Refused503++
			u.refused++
		case a.status != 0:
			c.r.OtherStatus[a.status]++
			if a.status == http.StatusConflict || a.status >= 500 {
				u.mayHave++ // a keyed request in progress, or a server's failure: not a refusal
			}
		default:
			c.r.NoAnswer++
			u.mayHave++
		}
	}

}

// countPrompts counts the prompts: the pushes Daraja accepted, each of which
// showed the customer a prompt. A push refused ("Unable to lock
// subscriber", say) or never processed is not one, whatever came before it.
func (c *analysis) countPrompts() {
	// Prompts: the pushes Daraja accepted, each of which showed the
	// customer a prompt. A push refused ("Unable to lock subscriber", say)
	// or never processed is not one, whatever came before it.
	c.r.Pushes = len(c.rec.Pushes)
	for _, p := range c.rec.Pushes {
		if !p.Accepted {
			continue
		}
		c.r.AcceptedPushes++
		id := trackingIDOf(p.Body.CallBackURL)
		c.byID[id] = append(c.byID[id], p.ResultCode)
		if c.promptedOn[p.Body.PhoneNumber] == nil {
			c.promptedOn[p.Body.PhoneNumber] = map[string]int{}
		}
		c.promptedOn[p.Body.PhoneNumber][id]++
	}
}

// countPromptsPerPhone finds the payments prompted beyond their phone's
// requests.
func (c *analysis) countPromptsPerPhone() {
	// A phone may be shared by several requests. The payments prompted on
	// it that are not among its accepted tracking ids must each be one of
	// its requests whose answer said nothing sure (no answer, a 503 "not
	// confirmed", a 409 or another 5xx); one more is a request answered 503 that
	// was pushed anyway, or else a second payment made by a retry.
	for phone, ids := range c.promptedOn {
		u := c.phones[phone]
		if u == nil {
			for _, n := range ids {
				c.r.PushedUnaccounted += n
			}
			continue
		}
		unknown := 0
		for id := range ids {
			if !u.accepted[id] {
				unknown++
			}
		}
		c.r.PushedUnconfirmed += min(unknown, u.unconfirmed)
		if excess := unknown - u.mayHave; excess > 0 {
			refused := min(excess, u.refused)
			c.r.Pushed503 += refused
			c.r.PhonesPromptedTwice += excess - refused
			if excess > refused && len(c.r.PromptedTwiceOn) < 10 {
				var unnamed []string
				for id := range ids {
					if !u.accepted[id] {
						unnamed = append(unnamed, id)
					}
				}
				sort.Strings(unnamed)
				c.r.PromptedTwiceOn = append(c.r.PromptedTwiceOn, fmt.Sprintf("%s: prompted for %v, which no 2xx named; answers that may have made them %d, 503s %d",
					events.MaskPhone(phone), unnamed, u.mayHave, u.refused))
			}
		}
	}
}

// countDoubles counts the payments whose customer was prompted more than
// once.
func (c *analysis) countDoubles() {
	var doubles []string
	for id, codes := range c.byID {
		if len(codes) > 1 {
			c.r.DoublePushes++
			doubles = append(doubles, fmt.Sprintf("%s (%d prompts)", id, len(codes)))
		}
	}
	sort.Strings(doubles)
	if len(doubles) > 10 {
		doubles = doubles[:10]
	}
	c.r.DoublePushIDs = doubles

}

// checkRecords finds records not final, and payments the customer made
// recorded as neither Success nor Unknown.
func (c *analysis) checkRecords() {
	// Every record final, whether or not its client heard of it; and
	// every payment the customer made recorded as Success, or as Unknown
	// where stkgate could not learn the outcome.
	var notFinal, paidOther []string
	for id, row := range c.rows {
		if row.status != events.StatusFinal {
			notFinal = append(notFinal, fmt.Sprintf("%s (status %d, source %q)", id, row.status, row.source))
		}
	}
	for id, codes := range c.byID {
		if !slices.Contains(codes, "0") {
			continue
		}
		row, ok := c.rows[id]
		switch {
		case !ok:
			paidOther = append(paidOther, id+": no record")
		case row.status != events.StatusFinal:
			// counted as not final
		default:
			if _, label := events.Outcome(row.responseCode); label != events.LabelSuccess && label != events.LabelUnknown {
				paidOther = append(paidOther, fmt.Sprintf("%s: recorded %s (%q from %s)", id, label, row.responseCode, row.source))
			}
		}
	}
	c.r.NotFinal, c.r.NotFinalIDs = len(notFinal), firstFew(notFinal)
	c.r.PaidNotRecorded, c.r.PaidNotRecordedIDs = len(paidOther), firstFew(paidOther)

}

// checkCallbacks finds callbacks answered 200 whose record does not
// reflect them.
func (c *analysis) checkCallbacks() {
	c.r.CallbacksSent = len(c.rec.Callbacks)
	for _, cb := range c.rec.Callbacks {
		if cb.StatusCode != http.StatusOK {
			continue
		}
		c.r.CallbacksDelivered++
		id := trackingIDOf(cb.URL)
		row, ok := c.rows[id]
		if ok && c.lateForged[id] && preempted(row, cb.ResultCode) {
			// Daraja's late failure came after the forger's: the first
			// late failure stands (docs/SECURITY.md, "A forged late
			// result"), and neither pays anyone.
			c.r.PreemptedByForgery++
			continue
		}
		if !ok || !reflects(row, cb.ResultCode) {
			c.r.CallbacksUnreflected++
			if len(c.r.UnreflectedIDs) < 10 {
				got := "no record"
				if ok {
					got = fmt.Sprintf("status %d code %q", row.status, row.responseCode)
				}
				c.r.UnreflectedIDs = append(c.r.UnreflectedIDs, fmt.Sprintf("%s: callback %q, record %s", id, cb.ResultCode, got))
			}
		}
	}
}

// checkOutcomes counts final records whose code differs from their single
// prompt's outcome.
func (c *analysis) checkOutcomes() {
	for id, codes := range c.byID {
		if row, ok := c.rows[id]; ok && row.status == 1 && len(codes) == 1 && row.responseCode != codes[0] {
			c.r.OutcomeMismatches++
			if len(c.r.MismatchIDs) < 10 {
				c.r.MismatchIDs = append(c.r.MismatchIDs, fmt.Sprintf("%s: Daraja's outcome %q, record %q from %s", id, codes[0], row.responseCode, row.source))
			}
		}
	}
}

// forgedOutcomes counts what forged callbacks could leave behind: a
// receipt on a payment other than the one the fake paid with it, unless a
// reconciler flagged its holder RECEIPT DISPUTED; and a paid payment
// ended Unknown whose late result reads a failure although Daraja's
// success reached callback-ingest (a late success replaces a late
// failure). One whose genuine callback never came keeps a forged late
// failure by design (docs/SECURITY.md, "A forged late result"): counted,
// not judged.
func (r *Report) forgedOutcomes(rows map[string]row, rec simRecordings, byID map[string][]string, callbackOf map[string]int, disputed map[string]bool) {
	paidWith := receiptsOf(rec, false)
	var elsewhere, lateFailed []string
	for id, row := range rows {
		owner, ok := paidWith[strings.ToUpper(row.receipt)]
		if row.receipt == "" || !ok || owner == id {
			continue
		}
		r.ReceiptElsewhere++
		if !disputed[id] {
			elsewhere = append(elsewhere, fmt.Sprintf("%s holds %s, which Daraja paid %s with", id, row.receipt, owner))
		}
	}
	for id, codes := range byID {
		row, ok := rows[id]
		if !ok || row.status != events.StatusFinal || row.lateCode == "" || !slices.Contains(codes, "0") {
			continue
		}
		_, label := events.Outcome(row.responseCode)
		_, late := events.Outcome(row.lateCode)
		if label != events.LabelUnknown || late == events.LabelSuccess {
			continue
		}
		r.PaidLateFailure++
		if callbackOf[id] == http.StatusOK {
			lateFailed = append(lateFailed, fmt.Sprintf("%s: %q, late result %q", id, row.responseCode, row.lateCode))
		}
	}
	r.ReceiptElsewhereUnflagged, r.ReceiptElsewhereIDs = len(elsewhere), firstFew(elsewhere)
	r.PaidLateFailureDelivered, r.PaidLateFailureIDs = len(lateFailed), firstFew(lateFailed)
}

// reflects says whether a final record shows a delivered callback's code:
// as its outcome, or, when stkgate had ended the payment Unknown before
// the callback counted (a fast failure held for a query it could not ask,
// say), as its late result (meta.late_result).
// preempted reports whether row, ended Unknown, holds a late failure other
// than the failure code its genuine callback gave.
func preempted(row row, code string) bool {
	_, label := events.Outcome(row.responseCode)
	return row.status == events.StatusFinal && label == events.LabelUnknown && row.lateCode != "" &&
		row.lateCode != "0" && code != "0" && row.lateCode != code
}

func reflects(row row, code string) bool {
	if row.status != events.StatusFinal {
		return false
	}
	_, label := events.Outcome(row.responseCode)
	return row.responseCode == code || (label == events.LabelUnknown && row.lateCode == code)
}

// phoneUse is what the requests sent to one phone were answered.
type phoneUse struct {
	accepted    map[string]bool // their tracking ids
	mayHave     int             // answers that do not say whether a payment was made (none, 503 "not confirmed", 409, 5xx)
	unconfirmed int             // of those, 503 "not confirmed"
	refused     int             // 503: nothing was made durable
}

// firstFew sorts ids and keeps the first ten, for a report line.
func firstFew(ids []string) []string {
	sort.Strings(ids)
	if len(ids) > 10 {
		ids = ids[:10]
	}
	return ids
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
