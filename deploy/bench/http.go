package main

// The load's HTTP requests.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

func newClient(conns int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}}
}

// pushBody is a request of POST /api/stk-push for a random phone that
// pays (the fake's outcome by the last digits: 5xxx pays).
func pushBody(i int) []byte {
	return fmt.Appendf(nil, `{"phone":"07%04d5%03d","amount":%d,"reference":"BENCH-%d","tag":"bench"}`,
		rand.IntN(10000), rand.IntN(1000), 10+i%5000, i)
}

// do sends one request and reads the answer; v, if not nil, receives its
// JSON body. ok is a 2xx answer.
func do(ctx context.Context, c *http.Client, method, url, token string, body []byte, v any) bool {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return false
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("X-API-Token", token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode/100 == 2 {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			return false
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode/100 == 2
}

// accepted is the part of POST /api/stk-push's answer the load reads.
type accepted struct {
	TrackingID string `json:"tracking_id"`
}
