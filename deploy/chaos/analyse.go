package main

// The analysis of a run: the answers, prompts, records and callbacks
// counted and checked against the money guarantees, into a Report.

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/stkgate/stkgate/events"
)

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
