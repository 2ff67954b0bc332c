package main

// The paths measured against their baselines: accept, poll, callback and
// project, each in alternating rounds (ours, baseline, ours, …).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// pair is one path's figures over the rounds.
type pair struct {
	ours, baseline []figures
	unit           string
}

// side is one side of a pair: a round's load, and the process whose CPU
// time a round costs ("": none, or the round measures it itself).
type side struct {
	proc  string
	round func(ctx context.Context, warm bool) (figures, error)
}

// measured runs one round of s, with the CPU time its process spent.
func (b *bench) measured(ctx context.Context, s side, warm bool) (figures, error) {
	p := b.s.procs[s.proc]
	if p == nil {
		return s.round(ctx, warm)
	}
	before, err := p.Usage()
	if err != nil {
		return figures{}, err
	}
	f, err := s.round(ctx, warm)
	if err != nil {
		return f, err
	}
	after, err := p.Usage()
	f.cpu = after.CPU - before.CPU
	return f, err
}

// alternate runs ours and baseline in turn, rounds times each, after one
// short warm-up of each that is not counted.
func (b *bench) alternate(ctx context.Context, path, unit string, ours, baseline side) (pair, error) {
	p := pair{unit: unit}
	for _, s := range []side{ours, baseline} {
		f := func(ctx context.Context, warm bool) (figures, error) { return b.measured(ctx, s, warm) }
		if _, err := f(ctx, true); err != nil {
			return p, fmt.Errorf("%s warm-up: %w", path, err)
		}
	}
	for r := range b.o.Rounds {
		o, err := b.measured(ctx, ours, false)
		if err != nil {
			return p, fmt.Errorf("%s round %d: %w", path, r+1, err)
		}
		base, err := b.measured(ctx, baseline, false)
		if err != nil {
			return p, fmt.Errorf("%s baseline round %d: %w", path, r+1, err)
		}
		b.logf("%s round %d: ours %.0f %s (%d failed, p99 %.1f ms, %.0f µs CPU each), baseline %.0f %s (%d failed, p99 %.1f ms, %.0f µs CPU each)",
			path, r+1, o.perSecond(), unit, o.failed, o.quantile(0.99), o.cpuEach(), base.perSecond(), unit, base.failed, base.quantile(0.99), base.cpuEach())
		p.ours, p.baseline = append(p.ours, o), append(p.baseline, base)
	}
	return p, nil
}

func (b *bench) roundLen(warm bool) time.Duration {
	if warm {
		return b.o.Round / 4
	}
	return b.o.Round
}

// accept: POST /api/stk-push through the api against a bare handler that
// decodes and publishes the same bytes with ack.
func (b *bench) accept(ctx context.Context) (pair, error) {
	if err := b.s.start(ctx, "api", "bench-baseline"); err != nil {
		return pair{}, err
	}
	api, base := "http://"+b.s.addr["api"]+"/api/stk-push", "http://"+b.s.addr["bench-baseline"]+"/accept"
	var mu sync.Mutex
	ours := func(ctx context.Context, warm bool) (figures, error) {
		return closedLoop(ctx, b.o.Conc, b.roundLen(warm), func(ctx context.Context, i int) (bool, bool) {
			var a accepted
			ok := do(ctx, b.client, "POST", api, tokenOf(clientAccept), pushBody(i), &a)
			if ok {
				mu.Lock()
				b.ids = append(b.ids, a.TrackingID)
				mu.Unlock()
			}
			return ok, true
		}), nil
	}
	bare := func(ctx context.Context, warm bool) (figures, error) {
		return closedLoop(ctx, b.o.Conc, b.roundLen(warm), func(ctx context.Context, i int) (bool, bool) {
			return do(ctx, b.client, "POST", base, "", pushBody(i), nil), true
		}), nil
	}
	return b.alternate(ctx, "accept", "req/s", side{"api", ours}, side{"bench-baseline", bare})
}

// poll: GET /api/stk-push/<id> of random accepted ids against a bare
// handler doing one indexed read; the projector has written every id.
func (b *bench) poll(ctx context.Context) (pair, error) {
	// A fresh api, so that its profile (-profile) holds the polls alone.
	b.s.stop("api")
	if err := b.s.start(ctx, "projector", "api"); err != nil {
		return pair{}, err
	}
	if err := b.waitRows(ctx, clientAccept, len(b.ids), false); err != nil {
		return pair{}, err
	}
	api, base := "http://"+b.s.addr["api"]+"/api/stk-push/", "http://"+b.s.addr["bench-baseline"]+"/poll/"
	loop := func(url, token string) func(context.Context, bool) (figures, error) {
		return func(ctx context.Context, warm bool) (figures, error) {
			return closedLoop(ctx, b.o.Conc, b.roundLen(warm), func(ctx context.Context, _ int) (bool, bool) {
				return do(ctx, b.client, "GET", url+b.ids[rand.IntN(len(b.ids))], token, nil, nil), true
			}), nil
		}
	}
	return b.alternate(ctx, "poll", "req/s", side{"api", loop(api, tokenOf(clientAccept))}, side{"bench-baseline", loop(base, "")})
}

// waitRows waits until the client's rows number n (final ones only, if
// final).
func (b *bench) waitRows(ctx context.Context, client string, n int, final bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	q := `SELECT count(*) FROM stk_pushes WHERE client = $1`
	if final {
		q += ` AND status = 1`
	}
	for {
		var got int
		if err := b.s.db.QueryRowContext(ctx, q, client).Scan(&got); err != nil {
			return fmt.Errorf("waiting for %d rows of %s: %w", n, client, err)
		}
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d rows of %s, want %d: %w", got, client, n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitOneFinal waits until the row of trackingID is final (status 1),
// looking every 5 ms: a lookup by its unique key is cheap.
func (b *bench) waitOneFinal(ctx context.Context, trackingID string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		var final bool
		err := b.s.db.QueryRowContext(ctx, `SELECT status = 1 FROM stk_pushes WHERE tracking_id = $1`, trackingID).Scan(&final)
		switch {
		case err == nil && final:
			return nil
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("waiting for %s to be final: %w", trackingID, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to be final: %w", trackingID, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// payments reads the accepted payments back from the read model.
func (b *bench) payments(ctx context.Context) ([]events.Payment, error) {
	rows, err := b.s.db.QueryContext(ctx, `SELECT tracking_id, client, phone_number, amount, reference, coalesce(tag, ''), created_at
		FROM stk_pushes WHERE client = $1 AND stage = 0`, clientAccept)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ps []events.Payment
	for rows.Next() {
		var p events.Payment
		if err := rows.Scan(&p.TrackingID, &p.Client, &p.Phone, &p.Amount, &p.Reference, &p.Tag, &p.RequestedAt); err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, rows.Err()
}

// publishAll publishes evs to the STK stream and waits for every ack.
func (b *bench) publishAll(ctx context.Context, evs []events.Event) error {
	// Chunks below nats.go's bound on unacknowledged async publishes
	// (4000), past which PublishAsync stalls and fails.
	for chunk := range slices.Chunk(evs, 1000) {
		for _, ev := range chunk {
			subject, msgID, body, err := events.Encode("stkgate/bench", ev, time.Now())
			if err != nil {
				return err
			}
			if _, err := b.s.js.PublishAsync(subject, body, jetstream.WithMsgID(msgID)); err != nil {
				return err
			}
		}
		select {
		case <-b.s.js.PublishAsyncComplete():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// callback: genuine callbacks (valid URL tokens, dispatched payments)
// through callback-ingest against the bare publish handler.
func (b *bench) callback(ctx context.Context) (pair, error) {
	// The accepted payments come from the read model: without poll before
	// it (-paths callback), the projector is started here and waited for.
	if _, running := b.s.procs["projector"]; !running {
		if err := b.s.start(ctx, "projector"); err != nil {
			return pair{}, err
		}
	}
	if err := b.waitRows(ctx, clientAccept, len(b.ids), false); err != nil {
		return pair{}, err
	}
	ps, err := b.payments(ctx)
	if err != nil {
		return pair{}, err
	}
	var evs []events.Event
	bodies := make([][]byte, len(ps))
	for i, p := range ps {
		d := events.Dispatched{Payment: p, MerchantRequestID: fmt.Sprintf("bench-m-%d", i), CheckoutRequestID: fmt.Sprintf("ws_CO_bench_%d", i)}
		evs = append(evs, d)
		if bodies[i], err = darajatest.CallbackJSON(darajatest.Callback{MerchantRequestID: d.MerchantRequestID,
			CheckoutRequestID: d.CheckoutRequestID, ResultCode: "0", Amount: p.Amount, Receipt: fmt.Sprintf("TB%08X", i),
			Phone: p.Phone, TransactionDate: time.Now()}); err != nil {
			return pair{}, err
		}
	}
	if err := b.publishAll(ctx, evs); err != nil {
		return pair{}, err
	}
	if err := b.s.start(ctx, "callback-ingest"); err != nil {
		return pair{}, err
	}
	secrets, err := events.ParseCallbackSecrets(b.s.secret)
	if err != nil {
		return pair{}, err
	}
	var mu sync.Mutex
	next := 0 // each payment's callback is sent once
	loop := func(base string, own bool) func(context.Context, bool) (figures, error) {
		return func(ctx context.Context, warm bool) (figures, error) {
			return closedLoop(ctx, b.o.Conc, b.roundLen(warm), func(ctx context.Context, i int) (bool, bool) {
				j := i % len(ps)
				if own {
					mu.Lock()
					j, next = next, next+1
					mu.Unlock()
					if j >= len(ps) {
						return false, false
					}
				}
				id := ps[j].TrackingID
				url := events.CallbackURL(base, id, secrets.Token(id))
				return do(ctx, b.client, "POST", url, "", bodies[j], nil), true
			}), nil
		}
	}
	p, err := b.alternate(ctx, "callback", "req/s", side{"callback-ingest", loop("http://"+b.s.addr["callback-ingest"], true)},
		side{"bench-baseline", loop("http://"+b.s.addr["bench-baseline"], false)})
	if err == nil && next >= len(ps) {
		b.logf("callback: every accepted payment's callback was sent; rounds ended early (accept more with a longer -round)")
	}
	return p, err
}

// project: the projector's rows/s from a pre-filled stream (each payment
// requested, dispatched and completed) against COPY of the same final rows
// into a table like stk_pushes.
func (b *bench) project(ctx context.Context) (pair, error) {
	b.s.stop("projector", "callback-ingest", "api", "bench-baseline")
	var rows [][]events.Event
	round := 0
	ours := func(ctx context.Context, warm bool) (figures, error) {
		n := b.o.ProjectN
		if warm {
			n /= 4
		}
		round++
		var evs []events.Event
		var finals []events.Event
		now := time.Now().UTC().Truncate(time.Microsecond)
		for i := range n {
			p := events.Payment{TrackingID: uuid.NewString(), Client: fmt.Sprintf("project-%d", round), Phone: fmt.Sprintf("2547%08d", rand.IntN(1e8)),
				Amount: int64(10 + i), Reference: fmt.Sprintf("P-%d-%d", round, i), RequestedAt: now}
			d := events.Dispatched{Payment: p, MerchantRequestID: fmt.Sprintf("pm-%d-%d", round, i), CheckoutRequestID: fmt.Sprintf("ws_CO_p_%d_%d", round, i)}
			c := events.Completed{Payment: p, ResultCode: "0", ResultDesc: "The service request is processed successfully.",
				Receipt: fmt.Sprintf("TP%02X%06X", round, i), TransactionDate: now.Format(events.TransactionDateLayout), Source: "callback",
				MerchantRequestID: d.MerchantRequestID, CheckoutRequestID: d.CheckoutRequestID, CompletedAt: now}
			evs = append(evs, events.Requested{Payment: p}, d, c)
			finals = append(finals, c)
		}
		// The projector is started and then paused while the stream is
		// filled, so that neither its start-up nor the filling is counted.
		if err := b.s.start(ctx, "projector"); err != nil {
			return figures{}, err
		}
		defer b.s.stop("projector")
		proj := b.s.procs["projector"]
		if err := proj.Pause(); err != nil {
			return figures{}, err
		}
		if err := b.publishAll(ctx, evs); err != nil {
			_ = proj.Resume()
			return figures{}, err
		}
		rows = append(rows, finals)
		before, err := proj.Usage()
		if err != nil {
			return figures{}, err
		}
		t0 := time.Now()
		if err := proj.Resume(); err != nil {
			return figures{}, err
		}
		// The last payment's row first: one lookup by its unique key, where
		// counting the round's rows every 20 ms would scan them and take
		// Postgres from the projector. Its completion is the stream's last
		// event, so the count then normally holds at once.
		last := finals[len(finals)-1].Base().TrackingID
		if err := b.waitOneFinal(ctx, last); err != nil {
			return figures{}, err
		}
		if err := b.waitRows(ctx, fmt.Sprintf("project-%d", round), n, true); err != nil {
			return figures{}, err
		}
		took := time.Since(t0)
		after, err := proj.Usage()
		return figures{ok: n, took: took, cpu: after.CPU - before.CPU}, err
	}
	bare := func(ctx context.Context, _ bool) (figures, error) {
		finals := rows[len(rows)-1]
		if _, err := b.s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS stk_pushes_copy (LIKE stk_pushes INCLUDING ALL)`); err != nil {
			return figures{}, err
		}
		t0 := time.Now()
		if err := copyRows(ctx, b.s.db, finals); err != nil {
			return figures{}, err
		}
		return figures{ok: len(finals), took: time.Since(t0)}, nil
	}
	return b.alternate(ctx, "project", "rows/s", side{"", ours}, side{"", bare})
}

// copyRows writes the final rows of completions with COPY, in one
// transaction.
func copyRows(ctx context.Context, db *sql.DB, cs []events.Event) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	st, err := tx.PrepareContext(ctx, `COPY stk_pushes_copy (tracking_id, client, phone_number, amount, reference,
		tag, status, response_code, response_description, transaction_code, merchant_request_id, checkout_request_id,
		transaction_date, stage, source, created_at, updated_at) FROM STDIN`)
	if err != nil {
		return err
	}
	for _, ev := range cs {
		c := ev.(events.Completed)
		if _, err := st.ExecContext(ctx, c.TrackingID, c.Client, c.Phone, c.Amount, c.Reference, nil, 1, c.ResultCode, c.ResultDesc,
			c.Receipt, c.MerchantRequestID, c.CheckoutRequestID, c.TransactionDate, 2, c.Source, c.RequestedAt, c.CompletedAt); err != nil {
			return err
		}
	}
	if _, err := st.ExecContext(ctx); err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	return tx.Commit()
}
