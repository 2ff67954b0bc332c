package main

// The fake Daraja (daraja-sim) as the run drives it: started once and
// never killed, its faults scripted, its recordings read, callbacks replayed.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	_ "github.com/lib/pq" // the "postgres" driver

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// simRecordings is the body of daraja-sim's GET /recordings.
type simRecordings struct {
	Pushes    []darajatest.Push             `json:"pushes"`
	Queries   []darajatest.Query            `json:"queries"`
	Callbacks []darajatest.CallbackDelivery `json:"callbacks"`
}

func recordings(ctx context.Context, controlURL string) (simRecordings, error) {
	var rec simRecordings
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, controlURL+"/recordings", nil)
	if err != nil {
		return rec, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return rec, fmt.Errorf("daraja-sim recordings: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
		return rec, fmt.Errorf("daraja-sim recordings: %w", err)
	}
	return rec, nil
}

// trackingIDOf is the tracking id a CallBackURL names (<id>/<token>).
func trackingIDOf(callbackURL string) string {
	i := strings.LastIndex(callbackURL, events.CallbackPath)
	if i < 0 {
		return ""
	}
	id, _, ok := events.ParseCallbackPath(callbackURL[i:])
	if !ok {
		return ""
	}
	return id
}

// replayCallbacks sends up to n delivered callbacks again, as a Daraja
// that repeats itself would, and counts the records that changed.
func replayCallbacks(ctx context.Context, db *sql.DB, rec simRecordings, rows map[string]row, n int, rng *rand.Rand) (replayed, changed int, err error) {
	var delivered []darajatest.CallbackDelivery
	for _, c := range rec.Callbacks {
		if c.StatusCode == http.StatusOK {
			delivered = append(delivered, c)
		}
	}
	rng.Shuffle(len(delivered), func(i, j int) { delivered[i], delivered[j] = delivered[j], delivered[i] })
	if len(delivered) > n {
		delivered = delivered[:n]
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, c := range delivered {
		if err := replayOne(ctx, client, c, replayTries, time.Second); err != nil {
			return replayed, 0, err
		}
		replayed++
	}
	if replayed == 0 {
		return 0, 0, nil
	}
	// The projector applies what callback-ingest published within moments;
	// a change, if any, shows by then.
	sleep(ctx, 3*time.Second)
	after, err := readRows(ctx, db)
	if err != nil {
		return replayed, 0, err
	}
	for _, c := range delivered {
		id := trackingIDOf(c.URL)
		if before, ok := rows[id]; ok && before != after[id] {
			changed++
		}
	}
	return replayed, changed, nil
}

// replayTries is how many times a replayed callback is sent before the run
// fails: callback-ingest, crashed at its failpoint, is restarted within a
// second or two.
const replayTries = 10

// replayOne sends callback c again until it is answered, at most tries
// times, pause apart: a replay that would publish an outcome (one that
// came before stk.dispatched, say) may crash callback-ingest at its
// failpoint after keeping it, and the lost connection is Daraja's to try
// again, as it would a callback without an answer.
func replayOne(ctx context.Context, client *http.Client, c darajatest.CallbackDelivery, tries int, pause time.Duration) error {
	var err error
	for range tries {
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(c.Body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		var resp *http.Response
		if resp, err = client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		sleep(ctx, pause)
	}
	return fmt.Errorf("replay callback (%d tries): %w", tries, err)
}

// script is daraja-sim's ScriptRequest.
type script struct {
	Phone      string   `json:"phone"`
	FailFirst  []string `json:"fail_first,omitempty"`
	NoCallback bool     `json:"no_callback,omitempty"`
}

func (s script) kind() string {
	if s.NoCallback {
		return "no-callback"
	}
	return strings.Join(s.FailFirst, "+")
}

// faultScripts makes some phones' first pushes fail, in the ways the
// dispatcher must retry (nothing reached the customer) and in the ways it
// must not (the push may have prompted the customer), answers some with
// pages that are not Daraja's (a proxy's HTML 404 or 403, a 401 without a
// body, an envelope whose text holds a NUL) or ("full" only) with a 503
// after Daraja processed the push (its retry then finds the subscriber
// locked), and loses some callbacks. "quick" leaves out the faults whose resolution
// waits out a prompt's lifetime (an ambiguous push whose callback a kill
// could lose). No shared phone (phoneFor) is scripted.
func faultScripts(n int, mode string) []script {
	if mode == "none" {
		return nil
	}
	var out []script
	for i := range n {
		var sc script
		switch i % 40 {
		case 1, 21:
			sc.FailFirst = []string{"service-unavailable"}
		case 3:
			sc.FailFirst = []string{"too-many-requests", "spike-arrest"}
		case 23:
			sc.FailFirst = []string{"quota"}
		case 5, 25:
			sc.FailFirst = []string{"locked"}
		case 7, 27:
			sc.NoCallback = true
		case 2:
			sc.FailFirst = []string{"html-404"}
		case 4:
			sc.FailFirst = []string{"html-403"}
		case 6:
			sc.FailFirst = []string{"unauthorized-empty"}
		case 8:
			sc.FailFirst = []string{"nul-message"}
		}
		if mode == "full" {
			switch i % 40 {
			case 11:
				sc.FailFirst = []string{"reset-after-accept"}
			case 13, 33:
				sc.FailFirst = []string{"internal-after-accept"}
			case 15:
				sc.FailFirst = []string{"timeout-after-accept"}
			case 17:
				sc.FailFirst = []string{"reset-after-read"}
			case 31:
				sc.FailFirst = []string{"internal-500.003.1001"}
			case 10, 30:
				// Ambiguous: the retry finds the subscriber locked while
				// the prompt is open, and must then wait for its callback.
				sc.FailFirst = []string{"service-unavailable-after-accept"}
			}
		}
		if sc.FailFirst != nil || sc.NoCallback {
			sc.Phone = phoneFor(i)
			out = append(out, sc)
		}
	}
	return out
}

func postScripts(ctx context.Context, controlURL string, scripts []script) error {
	if len(scripts) == 0 {
		return nil
	}
	return postControl(ctx, controlURL+"/scripts", scripts)
}

// postControl POSTs v as JSON to one of daraja-sim's control endpoints,
// which answers 204.
func postControl(ctx context.Context, url string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("daraja-sim %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("daraja-sim %s: %s: %s", url, resp.Status, b)
	}
	return nil
}

// oauthFaultKinds are the OAuth failures daraja-sim scripts (POST
// /oauth-faults): a 400 without a body (as after the consumer secret was
// rotated), a WAF's HTML 403, and the gateway's 503.
var oauthFaultKinds = []string{"empty-400", "html-403", "service-unavailable"}

// postOAuthFaults makes the fake's next count token requests fail with
// kind.
func postOAuthFaults(ctx context.Context, controlURL string, count int, kind string) error {
	return postControl(ctx, controlURL+"/oauth-faults", map[string]any{"count": count, "kind": kind})
}
