package main

import (
	"fmt"
	"io"
	"net/http"
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
	PhonesPromptedTwice  int            // requests (each has its phone) with more than one accepted push
	OtherStatus          map[int]int    // other HTTP answers, by status
	NoAnswer             int            // transport errors and timeouts: outcome unknown to the client
	Final                int            // accepted and status 1 in Postgres
	Lost                 int            // accepted and not final after the settle deadline
	LostIDs              []string       // the first few
	LostByCause          map[string]int // what the fake and Postgres say of each lost request
	NotFoundAfterAccept  int            // GET right after a 2xx answered 404
	FinalNeverPrompted   int            // accepted and final without any push Daraja accepted (failed before a prompt)
	Pushes               int            // push requests the fake received
	AcceptedPushes       int            // pushes Daraja accepted (prompts shown)
	DoublePushes         int            // tracking ids with more than one accepted push
	DoublePushIDs        []string       // the first few, with counts
	Pushed503            int            // requests answered 503 whose phone was prompted
	PushedUnaccounted    int            // accepted pushes for no request of this run
	CallbacksSent        int            // callbacks the fake tried to deliver
	CallbacksDelivered   int            // of those, answered 200
	CallbacksUnreflected int            // delivered (200) but the record's response_code differs
	UnreflectedIDs       []string       // the first few
	OutcomeMismatches    int            // final record whose code differs from its single accepted push's outcome
	MismatchIDs          []string       // the first few
	Queries              int            // STK queries the fake answered
	FinalBySource        map[string]int // who decided the outcome of the accepted requests
	Replayed             int            // delivered callbacks sent again
	ReplayChanged        int            // records a repeated callback changed
	PGStops              int
	Procs                []procFigures
	ChaosErrors          []string
	LoadTook, SettleTook time.Duration
	Failures             []string
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
	Running   bool
}

func analyse(o Options, answers []answer, rows map[string]row, rec simRecordings) *Report {
	r := &Report{Requests: len(answers), OtherStatus: map[int]int{}, FinalBySource: map[string]int{}, LostByCause: map[string]int{}}
	pushedIDs := map[string]bool{}
	for _, p := range rec.Pushes {
		if p.Accepted {
			pushedIDs[trackingIDOf(p.Body.CallBackURL)] = true
		}
	}
	callbackOf := map[string]int{} // tracking id → best status its callbacks got (200 wins)
	for _, c := range rec.Callbacks {
		id := trackingIDOf(c.URL)
		if st, ok := callbackOf[id]; !ok || st != http.StatusOK {
			callbackOf[id] = c.StatusCode
		}
	}

	refusedPhones := map[string]bool{}
	unconfirmedPhones := map[string]bool{}
	knownPhones := map[string]bool{}
	for _, a := range answers {
		knownPhones[a.phone] = true
		if a.keyed {
			r.Keyed++
			if a.attempts > 1 {
				r.KeyedRetried++
				if a.trackingID != "" {
					r.KeyedRetriedAccepted++
				}
			}
		}
		switch {
		case a.trackingID != "":
			r.Accepted++
			if a.getStatus == http.StatusNotFound {
				r.NotFoundAfterAccept++
			}
			row, ok := rows[a.trackingID]
			if ok && row.status == 1 {
				r.Final++
				r.FinalBySource[row.source]++
				if !pushedIDs[a.trackingID] {
					r.FinalNeverPrompted++
				}
			} else {
				r.Lost++
				state := "no record in Postgres"
				if ok {
					state = "pending in Postgres"
				}
				cause := state + ", never pushed"
				if pushedIDs[a.trackingID] {
					switch st, sent := callbackOf[a.trackingID]; {
					case !sent:
						cause = state + ", pushed, no callback sent yet"
					case st == http.StatusOK:
						cause = state + ", pushed, callback answered 200"
					default:
						cause = state + fmt.Sprintf(", pushed, callback not delivered (status %d)", st)
					}
				}
				r.LostByCause[cause]++
				if len(r.LostIDs) < 10 {
					r.LostIDs = append(r.LostIDs, a.trackingID+" ("+cause+")")
				}
			}
		case a.status == http.StatusServiceUnavailable && (a.message == msgUnconfirmed || a.message == msgUnknownOutcome):
			r.Unconfirmed503++
			unconfirmedPhones[a.phone] = true
		case a.status == http.StatusServiceUnavailable:
			r.Refused503++
			refusedPhones[a.phone] = true
		case a.status != 0:
			r.OtherStatus[a.status]++
		default:
			r.NoAnswer++
		}
	}

	byID := map[string][]string{} // tracking id → result codes of its accepted pushes
	byPhone := map[string]int{}
	r.Pushes = len(rec.Pushes)
	for _, p := range rec.Pushes {
		if !p.Accepted {
			continue
		}
		r.AcceptedPushes++
		if byPhone[p.Body.PhoneNumber]++; byPhone[p.Body.PhoneNumber] == 2 {
			r.PhonesPromptedTwice++
		}
		if unconfirmedPhones[p.Body.PhoneNumber] {
			r.PushedUnconfirmed++
		}
		if refusedPhones[p.Body.PhoneNumber] {
			r.Pushed503++
		}
		if !knownPhones[p.Body.PhoneNumber] {
			r.PushedUnaccounted++
		}
		id := trackingIDOf(p.Body.CallBackURL)
		byID[id] = append(byID[id], p.ResultCode)
	}
	var doubles []string
	for id, codes := range byID {
		if len(codes) > 1 {
			r.DoublePushes++
			doubles = append(doubles, fmt.Sprintf("%s (%d pushes)", id, len(codes)))
		}
	}
	sort.Strings(doubles)
	if len(doubles) > 10 {
		doubles = doubles[:10]
	}
	r.DoublePushIDs = doubles

	r.CallbacksSent = len(rec.Callbacks)
	for _, c := range rec.Callbacks {
		if c.StatusCode != http.StatusOK {
			continue
		}
		r.CallbacksDelivered++
		id := trackingIDOf(c.URL)
		if row, ok := rows[id]; !ok || row.status != 1 || row.responseCode != c.ResultCode {
			r.CallbacksUnreflected++
			if len(r.UnreflectedIDs) < 10 {
				got := "no record"
				if ok {
					got = fmt.Sprintf("status %d code %q", row.status, row.responseCode)
				}
				r.UnreflectedIDs = append(r.UnreflectedIDs, fmt.Sprintf("%s: callback %q, record %s", id, c.ResultCode, got))
			}
		}
	}
	for id, codes := range byID {
		if row, ok := rows[id]; ok && row.status == 1 && len(codes) == 1 && row.responseCode != codes[0] {
			r.OutcomeMismatches++
			if len(r.MismatchIDs) < 10 {
				r.MismatchIDs = append(r.MismatchIDs, fmt.Sprintf("%s: Daraja's outcome %q, record %q from %s", id, codes[0], row.responseCode, row.source))
			}
		}
	}
	r.Queries = len(rec.Queries)
	return r
}

// judge lists the broken guarantees of issue 3.
func (r *Report) judge() {
	fail := func(format string, args ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, args...)) }
	if r.Lost > 0 {
		fail("%d accepted requests never reached a final state (lost): %s", r.Lost, strings.Join(r.LostIDs, ", "))
	}
	if r.DoublePushes > 0 {
		fail("%d tracking ids were pushed more than once: %s", r.DoublePushes, strings.Join(r.DoublePushIDs, ", "))
	}
	if r.PhonesPromptedTwice > 0 {
		fail("%d requests prompted their phone more than once (a keyed retry must not make a second payment)", r.PhonesPromptedTwice)
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
	p("  of which never prompted   %d (refused, given up, or failed at a deadline)", r.FinalNeverPrompted)
	p("LOST (accepted, not final)  %d", r.Lost)
	causes := make([]string, 0, len(r.LostByCause))
	for c := range r.LostByCause {
		causes = append(causes, c)
	}
	sort.Strings(causes)
	for _, c := range causes {
		p("  %5d  %s", r.LostByCause[c], c)
	}
	p("404 right after 2xx         %d", r.NotFoundAfterAccept)
	p("pushes received / accepted  %d / %d", r.Pushes, r.AcceptedPushes)
	p("DOUBLE PUSHES (ids)         %d", r.DoublePushes)
	p("requests prompted twice     %d", r.PhonesPromptedTwice)
	p("pushes for 503'd requests   %d", r.Pushed503)
	p("callbacks sent / 200        %d / %d", r.CallbacksSent, r.CallbacksDelivered)
	p("  200 but not reflected     %d", r.CallbacksUnreflected)
	p("  replayed / changed record %d / %d", r.Replayed, r.ReplayChanged)
	p("outcome != pushed outcome   %d", r.OutcomeMismatches)
	for _, m := range r.MismatchIDs {
		p("  %s", m)
	}
	p("STK queries                 %d", r.Queries)
	p("Postgres stops              %d", r.PGStops)
	for _, f := range r.Procs {
		p("kills survived %-16s %d/%d (exits of its own: %d)", f.Name, f.Survived, f.Kills, f.SelfExits)
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
