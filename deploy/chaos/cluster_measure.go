package main

// The cluster run's measurement: its figures, judged and printed.

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

// clusterFigures is what a cluster run adds to the report.
type clusterFigures struct {
	Nodes, Instances int
	Faults           []fault
	// Throughput and latency over the whole load: accepted per second of
	// load; final per second from the first request to the last record
	// final; request to visible (POST sent to the record final in
	// Postgres, its updated_at).
	AcceptedPerSec, FinalPerSec float64
	VisibleP50, VisibleP99      time.Duration
	// The stages of request to visible, p50 and p99 each: request sent to
	// its prompt at Daraja (the api, the stream, the dispatcher), prompt to
	// its callback sent (Daraja's delay), callback sent to the record final
	// (callback-ingest, the stream, the projector, Postgres). The one that grows under load is the one backing up.
	ToPush, ToCallback, ToVisible [2]time.Duration
	// CPU is the CPU time each process's current instance used (Postgres
	// with its backends), read at the end; Leader leads STK then.
	CPU    []procCPU
	Leader string
}

// measureCluster reads each fault's recovery (measureFault), and the
// load's throughput and latency (stages), from the answers, the fake's
// pushes, and the read model.
func (r *runner) measureCluster(answers []answer, rows map[string]row, rec simRecordings) {
	c := &r.cluster
	var accepts []time.Time // 2xx answers, by time
	requestedAt := map[string]time.Time{}
	var first, lastFinal time.Time
	var visible []time.Duration
	for _, a := range answers {
		if a.sentAt.IsZero() {
			continue
		}
		if first.IsZero() || a.sentAt.Before(first) {
			first = a.sentAt
		}
		if a.trackingID == "" {
			continue
		}
		accepts = append(accepts, a.doneAt)
		requestedAt[a.trackingID] = a.sentAt
		if row, ok := rows[a.trackingID]; ok && row.status == events.StatusFinal {
			visible = append(visible, row.updatedAt.Sub(a.sentAt))
			if row.updatedAt.After(lastFinal) {
				lastFinal = row.updatedAt
			}
		}
	}
	sort.Slice(accepts, func(i, j int) bool { return accepts[i].Before(accepts[j]) })
	for i := range c.Faults {
		measureFault(&c.Faults[i], answers, accepts, requestedAt, rec)
	}
	if r.loadTook > 0 {
		c.AcceptedPerSec = float64(len(accepts)) / r.loadTook.Seconds()
	}
	if lastFinal.After(first) {
		c.FinalPerSec = float64(len(visible)) / lastFinal.Sub(first).Seconds()
	}
	c.VisibleP50, c.VisibleP99 = quantiles(visible)[0], quantiles(visible)[1]
	c.ToPush, c.ToCallback, c.ToVisible = stages(rows, rec, requestedAt)
}

// measureFault reads f's recovery: how soon after its start a request was
// accepted and a push accepted by the fake again, the longest time without
// an accept from its start to faultGap after its end, and the requests
// sent during it that were not accepted. accepts are the 2xx answers' times,
// sorted; requestedAt is when each accepted request was sent.
func measureFault(f *fault, answers []answer, accepts []time.Time, requestedAt map[string]time.Time, rec simRecordings) {
	f.AcceptAfter, f.PushAfter = -1, -1
	failed := map[int]int{} // answers other than 2xx to requests sent during the fault, by status (0: none)
	for _, a := range answers {
		if !a.sentAt.IsZero() && !a.sentAt.Before(f.Start) && !a.sentAt.After(f.End) && a.trackingID == "" {
			failed[a.status]++
		}
		if a.trackingID != "" && !a.sentAt.Before(f.Start) && a.doneAt.Sub(f.Start) < recoveryWindow {
			if d := a.doneAt.Sub(f.Start); f.AcceptAfter < 0 || d < f.AcceptAfter {
				f.AcceptAfter = d
			}
		}
	}
	for _, p := range rec.Pushes {
		at, ok := requestedAt[trackingIDOf(p.Body.CallBackURL)]
		if p.Accepted && ok && !at.Before(f.Start) && p.At.Sub(f.Start) < recoveryWindow {
			if d := p.At.Sub(f.Start); f.PushAfter < 0 || d < f.PushAfter {
				f.PushAfter = d
			}
		}
	}
	if len(failed) > 0 {
		f.notef("not accepted (by status, 0: no answer): %v", failed)
	}
	prev, end := f.Start, f.End.Add(faultGap)
	for _, t := range accepts {
		if t.Before(f.Start) {
			continue
		}
		if t.After(end) {
			break
		}
		f.Stall = max(f.Stall, t.Sub(prev))
		prev = t
	}
	f.Stall = max(f.Stall, end.Sub(prev))
}

// stages is the p50 and p99 of each stage of request to visible
// (clusterFigures.ToPush, ToCallback, ToVisible), from each accepted
// request's first accepted push, its callback, and its row.
func stages(rows map[string]row, rec simRecordings, requestedAt map[string]time.Time) (push, callback, visible [2]time.Duration) {
	var toPush, toCallback, toVisible []time.Duration
	pushedAt := map[string]time.Time{}
	for _, p := range rec.Pushes {
		id := trackingIDOf(p.Body.CallBackURL)
		if sent, ok := requestedAt[id]; ok && p.Accepted {
			if _, seen := pushedAt[id]; !seen {
				pushedAt[id] = p.At
				toPush = append(toPush, p.At.Sub(sent))
			}
		}
	}
	for _, cb := range rec.Callbacks {
		id := trackingIDOf(cb.URL)
		at, ok := pushedAt[id]
		if !ok || cb.StatusCode != http.StatusOK {
			continue
		}
		toCallback = append(toCallback, cb.At.Sub(at))
		if row, ok := rows[id]; ok && row.status == events.StatusFinal && row.source == "callback" {
			toVisible = append(toVisible, row.updatedAt.Sub(cb.At))
		}
	}
	return quantiles(toPush), quantiles(toCallback), quantiles(toVisible)
}

// quantiles are the p50 and p99 of ds (which it sorts).
func quantiles(ds []time.Duration) [2]time.Duration {
	slices.Sort(ds)
	n := len(ds)
	if n == 0 {
		return [2]time.Duration{}
	}
	return [2]time.Duration{ds[n/2], ds[min(n-1, n*99/100)]}
}

// judgeCluster adds the cluster's guarantees to the report's failures: a
// GET right after a 2xx finds the payment, and every SIGTERMed instance
// exits 0 within stopDeadline.
func (rep *Report) judgeCluster() {
	c := rep.Cluster
	if rep.NotFoundAfterAccept > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d GETs right after a 2xx answered 404", rep.NotFoundAfterAccept))
	}
	for _, f := range c.Faults {
		if !f.Term {
			continue
		}
		switch {
		case f.Hung:
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: no exit within %s of SIGTERM (killed)", f.What, hungAfter))
		case f.ExitCode != 0:
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: exit code %d after %s", f.What, f.ExitCode, f.Exit.Round(time.Millisecond)))
		case f.Exit > stopDeadline:
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: exited after %s, over the %s stop deadline", f.What, f.Exit.Round(time.Millisecond), stopDeadline))
		}
	}
}

// printCluster writes the cluster's figures.
func (c *clusterFigures) print(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("=== cluster: %d nats-servers, %d instances of each service", c.Nodes, c.Instances)
	p("accepted/s over the load    %.1f", c.AcceptedPerSec)
	p("final/s sustained           %.1f (first request to last record final)", c.FinalPerSec)
	p("request to visible (final)  p50 %s, p99 %s", c.VisibleP50.Round(time.Millisecond), c.VisibleP99.Round(time.Millisecond))
	q := func(d [2]time.Duration) string {
		return fmt.Sprintf("p50 %s, p99 %s", d[0].Round(time.Millisecond), d[1].Round(time.Millisecond))
	}
	p("  request to prompt         %s", q(c.ToPush))
	p("  prompt to callback sent   %s", q(c.ToCallback))
	p("  callback sent to visible  %s", q(c.ToVisible))
	var cpu []string
	for _, u := range c.CPU {
		lead := ""
		if u.Name == c.Leader {
			lead = " (STK leader)"
		}
		cpu = append(cpu, fmt.Sprintf("%s %.1fs%s", u.Name, u.Seconds, lead))
	}
	p("CPU from the load's start   %s", strings.Join(cpu, ", "))
	if len(c.Faults) == 0 {
		return
	}
	p("%-44s %10s %10s %10s %10s  %s", "fault", "took", "first 2xx", "1st push", "stall", "notes")
	d := func(d time.Duration) string {
		if d < 0 {
			return "none"
		}
		return d.Round(10 * time.Millisecond).String()
	}
	for _, f := range c.Faults {
		notes := slices.Clone(f.Notes)
		if f.Term {
			notes = append([]string{fmt.Sprintf("exit %d after %s", f.ExitCode, f.Exit.Round(time.Millisecond))}, notes...)
		}
		p("%-44s %10s %10s %10s %10s  %v", f.What, d(f.End.Sub(f.Start)), d(f.AcceptAfter), d(f.PushAfter), d(f.Stall), notes)
	}
}
