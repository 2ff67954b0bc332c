package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
)

// TestControl: every failure kind can be scripted through POST /scripts,
// and POST /oauth-faults fails the next token requests.
func TestControl(t *testing.T) {
	sim, err := darajatest.NewServer(darajatest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	control := httptest.NewServer(controlHandler(sim))
	defer control.Close()
	post := func(path, body string) int {
		t.Helper()
		resp, err := http.Post(control.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	for _, name := range []string{"html-404", "html-403", "unauthorized-empty", "nul-message", "service-unavailable-after-accept"} {
		if st := post("/scripts", `[{"phone":"254708375000","fail_first":["`+name+`"]}]`); st != http.StatusNoContent {
			t.Errorf("script %s: %d", name, st)
		}
	}
	if st := post("/scripts", `[{"phone":"254708375000","fail_first":["nope"]}]`); st != http.StatusBadRequest {
		t.Errorf("unknown failure: %d", st)
	}

	if st := post("/oauth-faults", `{"count":2,"kind":"empty-400"}`); st != http.StatusNoContent {
		t.Fatalf("oauth-faults: %d", st)
	}
	for _, bad := range []string{`{"count":2,"kind":"nope"}`, `{"count":`} {
		if st := post("/oauth-faults", bad); st != http.StatusBadRequest {
			t.Errorf("oauth-faults %s: %d", bad, st)
		}
	}
	for i, want := range []int{400, 400, 200} {
		req, _ := http.NewRequest(http.MethodGet, sim.URL()+daraja.PathOAuth+"?grant_type=client_credentials", nil)
		req.SetBasicAuth(darajatest.DefaultConsumerKey, darajatest.DefaultConsumerSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("token request %d: %d, want %d", i+1, resp.StatusCode, want)
		}
	}
	if n := sim.TokenRequests(); n != 3 {
		t.Errorf("TokenRequests %d, want 3", n)
	}
}
