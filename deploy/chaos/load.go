package main

// The load: one client posting requests at a fixed rate, retrying keyed
// ones, and what each got.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/lib/pq" // the "postgres" driver
)

// answer is what one request got: the last answer of its attempts.
type answer struct {
	phone      string
	keyed      bool // sent with an Idempotency-Key, retried
	attempts   int
	status     int    // 0: no HTTP answer
	message    string // of a non-2xx JSON answer
	trackingID string // of a 2xx
	err        string
	getStatus  int // status of the GET right after a 2xx; 0: none
	// sentAt is when the first attempt was sent, doneAt when the last was
	// answered (or failed): a fault's recovery is read from them.
	sentAt, doneAt time.Time
}

// phoneFor gives request i a phone of its own, except one in twenty
// (i%20 == 18), which shares its phone with the two others of its sixty:
// payments to one phone wait for each other, at the dispatcher and at
// Daraja ("Unable to lock subscriber" while a prompt is open). One in ten
// (none of the shared) ends in a suffix that makes the fake choose a
// failure outcome; the others pay.
func phoneFor(i int) string {
	if i%20 == 18 {
		return fmt.Sprintf("2547%04d7777", (i/60)%10000)
	}
	suffixes := []string{"1032", "0001", "1037", "1019", "2001"}
	last := fmt.Sprintf("%04d", 5000+i%1000)
	if i%10 == 9 {
		last = suffixes[(i/10)%len(suffixes)]
	}
	return fmt.Sprintf("2547%04d%s", i%10000, last)
}

// load posts o.N requests at o.Rate from o.Clients clients (see keyed for
// retries), and goes on while more, if not nil, says so: the cluster run
// loads the stack until its last fault is over. After each 2xx it GETs the
// id once.
func load(ctx context.Context, o Options, apiURL, token string, more func() bool) []answer {
	var mu sync.Mutex
	var answers []answer
	client := &http.Client{Timeout: 10 * time.Second}
	tick := time.NewTicker(time.Duration(float64(time.Second) / o.Rate))
	defer tick.Stop()
	var next atomic.Int64
	work := make(chan int)
	var wg sync.WaitGroup
	for range o.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				a := post(ctx, client, apiURL, token, i, o.Seed)
				mu.Lock()
				for len(answers) <= i {
					answers = append(answers, answer{})
				}
				answers[i] = a
				mu.Unlock()
			}
		}()
	}
	for ctx.Err() == nil {
		i := int(next.Add(1) - 1)
		if i >= o.N && (more == nil || !more()) {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
		select {
		case work <- i:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	return answers
}

// keyed says whether request i carries an Idempotency-Key; those are
// retried as a careful client would (no answer, 503, 409, 5xx), up to
// maxAttempts times. The others are sent once: a retry without a key is a
// second payment by contract, which is not what this run measures.
func keyed(i int) bool { return i%2 == 0 }

const maxAttempts = 5

func post(ctx context.Context, client *http.Client, apiURL, token string, i int, seed uint64) answer {
	a := answer{phone: phoneFor(i), keyed: keyed(i), sentAt: time.Now()}
	body, _ := json.Marshal(map[string]any{
		"phone": a.phone, "amount": 1 + i%500, "reference": fmt.Sprintf("CH%d", i), "tag": "chaos",
	})
	for attempt := 1; ; attempt++ {
		a.attempts = attempt
		try(ctx, client, apiURL, token, body, &a, seed, i)
		retry := a.status == 0 || a.status == http.StatusServiceUnavailable || a.status == http.StatusConflict || a.status >= 500
		if !a.keyed || !retry || attempt >= maxAttempts || ctx.Err() != nil {
			break
		}
		sleep(ctx, time.Duration(attempt)*300*time.Millisecond)
	}
	a.doneAt = time.Now()
	if a.trackingID == "" {
		return a
	}
	greq, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/api/stk-push/"+a.trackingID, nil)
	if err == nil {
		greq.Header.Set("X-API-Token", token)
		if gresp, err := client.Do(greq); err == nil {
			_, _ = io.Copy(io.Discard, gresp.Body)
			gresp.Body.Close()
			a.getStatus = gresp.StatusCode
		}
	}
	return a
}

// try sends one attempt and records its answer in a.
func try(ctx context.Context, client *http.Client, apiURL, token string, body []byte, a *answer, seed uint64, i int) {
	a.status, a.err, a.message, a.trackingID = 0, "", "", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/api/stk-push", bytes.NewReader(body))
	if err != nil {
		a.err = err.Error()
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Token", token)
	if a.keyed {
		req.Header.Set("Idempotency-Key", fmt.Sprintf("chaos-%d-%d", seed, i))
	}
	resp, err := client.Do(req)
	if err != nil {
		a.err = err.Error()
		return
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	a.status = resp.StatusCode
	var ok struct {
		Message    string `json:"message"`
		TrackingID string `json:"tracking_id"`
		Data       struct {
			TrackingID string `json:"tracking_id"`
		} `json:"data"`
	}
	_ = json.Unmarshal(b, &ok)
	a.message = ok.Message
	if resp.StatusCode/100 != 2 {
		return
	}
	a.trackingID = ok.TrackingID
	if a.trackingID == "" {
		a.trackingID = ok.Data.TrackingID
	}
	if a.trackingID == "" {
		a.err = "2xx without a tracking id: " + string(b)
	}
}
