package main

// End to end: every service a process of its own, payments from POST to
// status 1; and the latency of a payment's steps at a fixed rate.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"

	"github.com/stkgate/stkgate/deploy/binaries"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

var services = []string{"projector", "api", "dispatcher", "callback-ingest"}

// serviceUsage is one service's use of the machine in the end-to-end run.
type serviceUsage struct {
	Service       string  `json:"service"`
	PeakRSSMB     float64 `json:"peak_rss_mb"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	CPUPerPayment float64 `json:"cpu_ms_per_payment"`
	// Memory over the run (growth.go), times in seconds since the load
	// began: at the end of the load's first fifth (after warm-up), at the
	// load's end, and at the end (every payment final, or the settle
	// window over); the growth is from the first to the last.
	WarmAt           float64     `json:"warm_t_s"`
	WarmRSSMB        float64     `json:"warm_rss_mb"`
	LoadEndAt        float64     `json:"load_end_t_s"`
	LoadEndRSSMB     float64     `json:"load_end_rss_mb"`
	EndAt            float64     `json:"end_t_s"`
	EndRSSMB         float64     `json:"end_rss_mb"`
	SampledPeakRSSMB float64     `json:"sampled_peak_rss_mb"`
	RSSGrowthMB      float64     `json:"rss_growth_mb"`
	RSSGrowthPerMin  float64     `json:"rss_growth_mb_per_min"`
	WarmHeapMB       float64     `json:"warm_heap_inuse_mb"`
	EndHeapMB        float64     `json:"end_heap_inuse_mb"`
	HeapGrowthMB     float64     `json:"heap_growth_mb"`
	HeapGrowthPerMin float64     `json:"heap_growth_mb_per_min"`
	Samples          []memSample `json:"samples"`
}

// endToEnd posts payments at E2ERate for E2EDuration to a fresh stack and
// waits until every accepted one is final. It says what each process used
// of the cores meanwhile.
func (b *bench) endToEnd(ctx context.Context) (result, []serviceUsage, []coreUse, error) {
	url := "http://" + b.s.addr["api"] + "/api/stk-push"
	// An open loop needs a connection per request in flight.
	client := newClient(1024)
	var ids []string
	var mu sync.Mutex
	start, before := time.Now(), snapSched()
	msgsBefore, err := b.s.ns.Varz(nil)
	if err != nil {
		return result{}, nil, nil, err
	}
	mem := newSampler(b.s, start)
	stopSampling, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		mem.run(ctx, stopSampling, b.o.E2ESample)
	}()
	defer func() {
		select {
		case <-sampled:
		default:
			close(stopSampling)
			<-sampled
		}
	}()
	f := openLoop(ctx, b.o.E2ERate, b.o.E2EDuration, func(ctx context.Context, i int) (bool, bool) {
		var a accepted
		ok := do(ctx, client, "POST", url, tokenOf(clientE2E), pushBody(i), &a)
		if ok {
			mu.Lock()
			ids = append(ids, a.TrackingID)
			mu.Unlock()
		}
		return ok, true
	})
	loadEnd := mem.look(ctx)
	b.logBacklog(ctx, "at the load's end")
	// Not final by the deadline counts as lost.
	settle, cancel := context.WithTimeout(ctx, b.o.E2ESettle)
	final, err := b.waitFinal(settle, ids)
	cancel()
	if err != nil && ctx.Err() != nil {
		return result{}, nil, nil, err
	}
	took, after := time.Since(start), snapSched()
	close(stopSampling)
	<-sampled
	mem.look(ctx)
	if mem.err != nil {
		return result{}, nil, nil, fmt.Errorf("memory: %w", mem.err)
	}
	if mem.heapErr != nil {
		b.logf("end to end: Go heap not read, RSS alone: %v", mem.heapErr)
	}
	n := len(ids)
	lost := n - final
	b.logf("end to end: %d accepted, %d without a 2xx within 30 s, at %.0f/s offered; %d of the accepted final after %s, %d not within %s",
		n, f.failed, b.o.E2ERate, final, took.Round(time.Millisecond), lost, b.o.E2ESettle)
	var use []serviceUsage
	for _, name := range services {
		u, err := binaries.UsageOf(b.s.procs[name].Pid())
		if err != nil {
			return result{}, nil, nil, err
		}
		su := serviceUsage{Service: name, PeakRSSMB: round(mb(u.PeakRSS), 2), CPUSeconds: round(u.CPU, 2),
			CPUPerPayment: round(1000*u.CPU/float64(max(n, 1)), 4)}
		su.growth(mem.samples[name], b.o.E2EDuration.Seconds()/5, loadEnd)
		use = append(use, su)
	}
	if v, err := b.s.ns.Varz(nil); err == nil {
		// Every JetStream call, publish, ack and delivery is a message
		// through the server (in the bench's process): its CPU follows them.
		b.logf("end to end: the NATS server took %.1f messages in and sent %.1f out a payment",
			float64(v.InMsgs-msgsBefore.InMsgs)/float64(max(final, 1)), float64(v.OutMsgs-msgsBefore.OutMsgs)/float64(max(final, 1)))
	}
	cores := coreUseSince(before, after)
	for i := range cores {
		cores[i].CPUMsPerPayment = round(cores[i].CPUMsPerS*after.at.Sub(before.at).Seconds()/float64(max(final, 1)), 3)
	}
	return result{Path: "end to end", Ours: float64(final) / took.Seconds(), Unit: "payments/s",
		P50: f.quantile(0.5), P99: f.quantile(0.99), Lost: &lost}, use, cores, nil
}

// logBacklog logs what each consumer of the STK and STK_CALLBACKS streams
// has still to take (pending) and has taken but not acked: which of the
// services a backlog waits on.
func (b *bench) logBacklog(ctx context.Context, when string) {
	var parts []string
	for _, name := range []string{events.StreamName, events.CallbackStreamName} {
		st, err := b.s.js.Stream(ctx, name)
		if err != nil {
			b.logf("end to end: backlog %s: %v", when, err)
			return
		}
		l := st.ListConsumers(ctx)
		for c := range l.Info() {
			parts = append(parts, fmt.Sprintf("%s/%s %d pending, %d unacked", name, c.Name, c.NumPending, c.NumAckPending))
		}
		if err := l.Err(); err != nil {
			b.logf("end to end: backlog %s: %v", when, err)
			return
		}
	}
	sort.Strings(parts)
	b.logf("end to end: backlog %s: %s", when, strings.Join(parts, "; "))
}

// latency posts payments at LatencyRate and watches the read model every
// watchEvery for each to be final: request-to-visible from the POST,
// callback-to-visible from the fake's delivery of its callback.
func (b *bench) latency(ctx context.Context) ([]result, []step, error) {
	const watchEvery = 5 * time.Millisecond
	url := "http://" + b.s.addr["api"] + "/api/stk-push"
	var mu sync.Mutex
	sent := map[string]time.Time{}
	w := &watched{visible: map[string]time.Time{}, txAt: map[string]time.Time{}}
	visible := w.visible
	stop := make(chan struct{})
	watchErr := make(chan error, 1)
	go func() { watchErr <- b.watch(ctx, watchEvery, &mu, sent, w, stop) }()
	before := snapSched()
	f := openLoop(ctx, b.o.LatencyRate, b.o.LatencyDuration, func(ctx context.Context, i int) (bool, bool) {
		t0 := time.Now()
		var a accepted
		ok := do(ctx, b.client, "POST", url, tokenOf(clientLatency), pushBody(i), &a)
		if ok {
			mu.Lock()
			sent[a.TrackingID] = t0
			mu.Unlock()
		}
		return ok, true
	})
	if err := b.waitRows(ctx, clientLatency, f.ok, true); err != nil {
		return nil, nil, err
	}
	b.cores = coreUseSince(before, snapSched())
	// The watcher sees the last ones within a look or two.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		mu.Lock()
		all := len(visible) == len(sent)
		mu.Unlock()
		if all {
			break
		}
		time.Sleep(watchEvery)
	}
	close(stop)
	if err := <-watchErr; err != nil {
		return nil, nil, err
	}
	cbs, err := callbacksDelivered(ctx, b.s.control)
	if err != nil {
		return nil, nil, err
	}
	var reqLat, cbLat []time.Duration
	for id, t := range sent {
		v, ok := visible[id]
		if !ok {
			continue
		}
		reqLat = append(reqLat, v.Sub(t))
		if at, ok := cbs[id]; ok {
			cbLat = append(cbLat, v.Sub(at))
		}
	}
	rq, cq := figures{lat: reqLat, ok: len(reqLat)}, figures{lat: cbLat, ok: len(cbLat)}
	unit := fmt.Sprintf("ms at %.0f/s", b.o.LatencyRate)
	out := []result{
		{Path: "request to visible", Ours: rq.quantile(0.5), Unit: unit, P50: rq.quantile(0.5), P99: rq.quantile(0.99)},
		{Path: "callback to visible", Ours: cq.quantile(0.5), Unit: unit, P50: cq.quantile(0.5), P99: cq.quantile(0.99)},
	}
	steps, err := b.callbackSteps(ctx, cbs, w)
	if err != nil {
		return nil, nil, err
	}
	var split []step
	for _, st := range steps {
		split = append(split, step{Step: st.name, N: len(st.f.lat), P50: st.f.quantile(0.5), P90: st.f.quantile(0.9), P99: st.f.quantile(0.99)})
	}
	return out, split, nil
}

// watched is what the watcher saw of each payment: when it was first seen
// final, and its row's updated_at (the projector's transaction's start,
// Postgres's now()).
type watched struct {
	visible map[string]time.Time
	txAt    map[string]time.Time
	looks   []time.Duration // each look's query, sent to answered
}

// step is one step of callback-to-visible (callbackSteps), over the
// payments for which every step's time was found.
type step struct {
	Step string  `json:"step"`
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
}

type namedFigures struct {
	name string
	f    figures
}

// callbackSteps breaks callback-to-visible down by payment, on the
// machine's one clock: from the fake's delivery to the raw copy stored in
// STK_CALLBACKS (JetStream's timestamp), to the stk.completed stored in
// STK, to the projector's transaction begun (the row's updated_at), to the
// look that saw it final. The last step includes the transaction, the
// commit and the watcher's resolution (up to watchEvery); the watcher's
// looks, query sent to answer read, are reported too.
func (b *bench) callbackSteps(ctx context.Context, cbs map[string]time.Time, w *watched) ([]namedFigures, error) {
	stk, err := b.s.js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, err
	}
	raw, err := b.s.js.Stream(ctx, events.CallbackStreamName)
	if err != nil {
		return nil, err
	}
	var kept, stored, projected, seen []time.Duration
	for id, at := range cbs {
		v, ok := w.visible[id]
		if !ok {
			continue
		}
		k, err := raw.GetLastMsgForSubject(ctx, events.CallbackSubjectReceived(id))
		if err != nil {
			continue // kept elsewhere (held for confirmation, say)
		}
		c, err := stk.GetLastMsgForSubject(ctx, events.Subject(events.TypeCompleted, id))
		if err != nil {
			continue
		}
		tx := w.txAt[id]
		kept = append(kept, k.Time.Sub(at))
		stored = append(stored, c.Time.Sub(k.Time))
		projected = append(projected, tx.Sub(c.Time))
		seen = append(seen, v.Sub(tx))
	}
	fig := func(l []time.Duration) figures { return figures{lat: l, ok: len(l)} }
	return []namedFigures{
		{"delivered to kept raw", fig(kept)},
		{"kept raw to stk.completed", fig(stored)},
		{"stk.completed to projector tx begun", fig(projected)},
		{"projector tx begun to visible", fig(seen)},
		{"watcher: one look", fig(w.looks)},
	}, nil
}

// waitFinal waits until every one of ids is final in the read model, or
// ctx is done, and says how many are. Each look asks only about the ones
// not yet seen final, so that a long run's backlog is not counted again
// in full every 100 ms.
func (b *bench) waitFinal(ctx context.Context, ids []string) (int, error) {
	pending := map[string]bool{}
	for _, id := range ids {
		pending[id] = true
	}
	for {
		list := make([]string, 0, len(pending))
		for id := range pending {
			list = append(list, id)
		}
		rows, err := b.s.db.QueryContext(context.WithoutCancel(ctx), `SELECT x FROM unnest($1::text[]) AS x
			JOIN stk_pushes p ON p.tracking_id = x::uuid WHERE p.status = 1`, pq.Array(list))
		if err != nil {
			return len(ids) - len(pending), err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return len(ids) - len(pending), err
			}
			delete(pending, id)
		}
		err = rows.Err()
		rows.Close()
		if err != nil || len(pending) == 0 {
			return len(ids) - len(pending), err
		}
		select {
		case <-ctx.Done():
			return len(ids) - len(pending), ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// watchQuery finds which of $1 are final: each with its updated_at (when
// the projector's transaction began) and the time of the look, read by
// Postgres once the query's snapshot is taken (clock_timestamp, evaluated
// once): a row in the answer was visible to any poll by then. The time the
// answer reaches the watcher would add the watcher's own wait for the
// answer (a core, on a loaded machine), which is no payment's.
const watchQuery = `SELECT tracking_id, updated_at, (SELECT clock_timestamp()) FROM stk_pushes
	WHERE tracking_id = ANY($1::uuid[]) AND status = 1`

// watch records when each sent payment is first seen final, until stop.
func (b *bench) watch(ctx context.Context, every time.Duration, mu *sync.Mutex, sent map[string]time.Time, w *watched, stop chan struct{}) error {
	visible := w.visible
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		mu.Lock()
		var pending []string
		for id := range sent {
			if _, ok := visible[id]; !ok {
				pending = append(pending, id)
			}
		}
		mu.Unlock()
		if len(pending) == 0 {
			continue
		}
		t0 := time.Now()
		rows, err := b.s.db.QueryContext(ctx, watchQuery, pq.Array(pending))
		if err != nil {
			return err
		}
		mu.Lock()
		for rows.Next() {
			var id string
			var tx, snap time.Time
			if err := rows.Scan(&id, &tx, &snap); err != nil {
				mu.Unlock()
				rows.Close()
				return err
			}
			visible[id], w.txAt[id] = snap, tx
		}
		w.looks = append(w.looks, time.Since(t0))
		mu.Unlock()
		rows.Close()
	}
}

// callbacksDelivered is when the fake delivered each tracking id's
// callback.
func callbacksDelivered(ctx context.Context, control string) (map[string]time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, control+"/recordings", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rec struct {
		Callbacks []darajatest.CallbackDelivery `json:"callbacks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	out := map[string]time.Time{}
	for _, c := range rec.Callbacks {
		i := strings.Index(c.URL, events.CallbackPath)
		if i < 0 {
			continue
		}
		if id, _, ok := events.ParseCallbackPath(c.URL[i:]); ok {
			out[id] = c.At
		}
	}
	return out, nil
}
