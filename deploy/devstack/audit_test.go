package devstack_test

// The secrets audit: the whole system runs with known, distinctive secrets
// and phones; every log line of every service, every error body, every
// record and every event is then searched for them.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stkgate/stkgate/api/admin"
	"github.com/stkgate/stkgate/dispatcher/daraja"
	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/logtest"
)

// The audit's secrets. Each is distinctive, so that finding it anywhere is
// a leak and not a coincidence.
const (
	auditToken       = "tok-AUDIT-7f3e9c1b5a2d"
	auditOtherToken  = "tok-AUDIT-2d8a6e4c0b9f"
	auditWrongToken  = "tok-AUDIT-WRONG-91c4e7" // presented, belongs to no one
	auditConsumerKey = "ck-AUDIT-4b7d2f9e1a6c"
	auditConsumerSec = "cs-AUDIT-8e1c5a3f7b0d"
	auditPassKey     = "pk-AUDIT-5f0b8d2e6a4c9e1f3a7b5d0c8e2f4a6b"
	auditDBPassword  = "pg-AUDIT-3c9f1e7a5b"
	auditCallbackSec = "cbsec-AUDIT-0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c"
	auditNATSPass    = "nats-AUDIT-pw-6d2a8f"
)

// darajaRecorder stands between the dispatcher and the fake Daraja and
// keeps the access tokens the fake hands out and the Authorization headers
// sent: secrets derived from the consumer key and secret.
type darajaRecorder struct {
	mu      sync.Mutex
	derived map[string]bool
}

func (d *darajaRecorder) add(s string) {
	if s == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.derived[s] = true
}

func (d *darajaRecorder) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for s := range d.derived {
		out = append(out, s)
	}
	return out
}

func (d *darajaRecorder) proxy(t *testing.T, target string) string {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.ModifyResponse = func(resp *http.Response) error {
		if auth := resp.Request.Header.Get("Authorization"); auth != "" {
			_, cred, _ := strings.Cut(auth, " ")
			d.add(cred)
		}
		if resp.Request.URL.Path != daraja.PathOAuth {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.Unmarshal(body, &tok)
		d.add(tok.AccessToken)
		return nil
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL
}

// auditPhone is a customer's phone as the api stores it; the simulator
// picks the outcome by its last four digits.
type auditPhone struct {
	intl  string // 2547XXXXXXXX
	label string
}

// subscriber is the part of the number every way of writing it contains
// (07…, 2547…, +254 7…): finding it is finding the phone.
func (p auditPhone) subscriber() string { return p.intl[3:] }

func TestAuditNoSecretsOrPhonesLeak(t *testing.T) {
	// Not parallel: it sets the default logger, to audit every line.
	var logs logtest.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// Anything logged around the stack's logger (slog.Default, the log
	// package, http.Server's error log) is audited as well.
	oldDefault, oldOut, oldFlags := slog.Default(), log.Writer(), log.Flags()
	slog.SetDefault(logger)
	t.Cleanup(func() {
		slog.SetDefault(oldDefault)
		log.SetOutput(oldOut)
		log.SetFlags(oldFlags)
	})
	var fakeLogs logtest.Buffer
	rec := &darajaRecorder{derived: map[string]bool{}}
	var dbURL string

	s := startStackWith(t, map[string]string{
		"API_TOKENS":      "acme:" + auditToken + ",globex:" + auditOtherToken,
		"CALLBACK_SECRET": auditCallbackSec,
	}, stackOptions{
		fake: darajatest.Options{
			ConsumerKey:    auditConsumerKey,
			ConsumerSecret: auditConsumerSec,
			PassKey:        auditPassKey,
			Logger:         slog.New(slog.NewJSONHandler(&fakeLogs, nil)),
		},
		logger:    logger,
		darajaURL: rec.proxy,
		// The "transient" payment's 503 is pushed again and must end
		// Success, as in TestTransientErrorsThenOneAcceptedPush.
		uncertainWindow: loadedUncertainWindow,
		// The test server has no users: it lets any in, and the services
		// hold the password all the same.
		natsURL: func(u string) string { return strings.Replace(u, "://", "://auditnats:"+auditNATSPass+"@", 1) },
		dbURL: func(u string) string {
			dbURL = withPassword(auditDBPassword)(u)
			return dbURL
		},
	})
	// A client of the database, as production has them: its tokens are
	// made by stkgate-admin, whose output is audited too.
	var adminOut logtest.Buffer
	runAdmin := func(args ...string) string {
		t.Helper()
		var stdout bytes.Buffer
		getenv := func(k string) string { return map[string]string{"DATABASE_URL": dbURL}[k] }
		if code := admin.Main(context.Background(), args, getenv, nil, &stdout, &adminOut); code != 0 {
			t.Fatalf("stkgate-admin %v: exit %d: %s", args, code, adminOut.String())
		}
		return strings.TrimSpace(stdout.String())
	}
	shopToken := runAdmin("client", "create", "auditshop")
	shopRotated := runAdmin("token", "rotate", "auditshop", "-grace", "0")
	runAdmin("token", "list", "auditshop")
	runAdmin("client", "list")
	if shopToken == "" || shopRotated == "" || shopToken == shopRotated {
		t.Fatalf("stkgate-admin printed tokens %q and %q", shopToken, shopRotated)
	}

	phones := map[string]auditPhone{
		"success":      {"254713570000", "Success"},
		"cancelled":    {"254713571032", "Cancelled by User"},
		"insufficient": {"254713570001", "Insufficient Balance"},
		"refused":      {"254713575601", "Failed"},
		"transient":    {"254713575602", "Success"},
		"merchant":     {"254713575603", "Failed"},
		"credentials":  {"254713575605", "Failed"},
		"held":         {"254713575606", ""},
		"shop":         {"254713575607", "Success"},
		"form":         {"254713575604", "Success"},
	}
	s.fake.Script(phones["refused"].intl, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailInvalidPhone}})
	s.fake.Script(phones["transient"].intl, darajatest.Script{FailFirst: []darajatest.Failure{
		darajatest.FailSpikeArrest, darajatest.FailInvalidToken, darajatest.FailServiceUnavailable,
	}})
	s.fake.Script(phones["merchant"].intl, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailMerchantNotExist}})
	s.fake.Script(phones["credentials"].intl, darajatest.Script{FailFirst: []darajatest.Failure{darajatest.FailWrongCredentials}})
	// Its callback is never sent: the audit sends one with the right token
	// but another amount and phone, which is held for confirmation.
	s.fake.Script(phones["held"].intl, darajatest.Script{NoCallback: true})
	// Written as clients write them, and never accepted: these must not be
	// echoed or logged either.
	badPhones := []string{"0813579911", "+254 7135799 12", "07135799134"}

	var bodies []string  // every error answer's body, with its request
	var answers []string // every other answer's body
	do := func(method, path, token, ctype, body string, hdr ...string) response {
		t.Helper()
		req, err := http.NewRequest(method, s.api+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("X-API-Token", token)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if line := fmt.Sprintf("%s %s → %d %s", method, path, resp.StatusCode, raw); resp.StatusCode >= 400 {
			bodies = append(bodies, line)
		} else {
			answers = append(answers, line)
		}
		r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
		_ = json.Unmarshal(raw, &r.body)
		return r
	}
	pushJSON := func(phone string, amount int, ref string) string {
		return fmt.Sprintf(`{"phone":%q,"amount":%d,"reference":%q,"tag":"audit"}`, phone, amount, ref)
	}

	// Success, failure and refusal flows.
	ids := map[string]string{}
	for name, p := range phones {
		var r response
		switch name {
		case "shop":
			r = do("POST", "/api/stk-push", shopRotated, "application/json", pushJSON("0"+p.subscriber(), 700, "AUDIT-S"))
		case "form":
			r = do("POST", "/api/stk-push", auditToken, "application/x-www-form-urlencoded",
				"phone=%2B254+713-575-604&amount=250&reference=AUDIT-F")
		default:
			r = do("POST", "/api/stk-push", auditToken, "application/json", pushJSON("0"+p.subscriber(), 1500, "AUDIT-1"))
		}
		if r.status != http.StatusAccepted {
			t.Fatalf("%s: POST = %d %s", name, r.status, r.raw)
		}
		ids[name], _ = r.body["tracking_id"].(string)
	}

	// Refusals and bad input, to the api.
	some := ids["success"]
	do("POST", "/api/stk-push", "", "application/json", pushJSON("0713579901", 10, "R"))
	do("POST", "/api/stk-push", auditWrongToken, "application/json", pushJSON("0713579902", 10, "R"))
	do("GET", "/api/stk-push/"+some, auditWrongToken, "", "")
	do("GET", "/api/stk-push/"+some, "Bearer "+auditToken+"x", "", "")
	do("GET", "/api/stk-push/"+some, auditOtherToken, "", "")
	do("GET", "/api/stk-push/"+some, shopRotated, "", "")
	do("GET", "/api/stk-push/"+ids["shop"], shopToken, "", "") // rotated out
	do("POST", "/api/stk-push", shopToken[:len(shopToken)-1]+"x", "application/json", pushJSON("0713579916", 10, "R"))
	do("GET", "/api/stk-push/0193a8c2-0000-7000-8000-000000000000", auditToken, "", "")
	do("GET", "/api/stk-push/not-a-uuid", auditToken, "", "")
	do("GET", "/api/nowhere", auditToken, "", "")
	do("DELETE", "/api/stk-push/"+some, auditToken, "", "")
	for _, p := range badPhones {
		do("POST", "/api/stk-push", auditToken, "application/json", pushJSON(p, 10, "R"))
	}
	do("POST", "/api/stk-push", auditToken, "application/json", `{"phone":"0713579903","amount":1.5,"reference":"R"}`)
	do("POST", "/api/stk-push", auditToken, "application/json", `{"phone":"0713579904","amount":10,"reference":"THIRTEEN-CHAR"}`)
	do("POST", "/api/stk-push", auditToken, "application/json", `{"phone":"0713579905","amount":`)
	do("POST", "/api/stk-push", auditToken, "application/json", `{"phone":"0713579906","phone":"0713579907","amount":10,"reference":"R"}`)
	do("POST", "/api/stk-push", auditToken, "application/json", `{"phone":"0713579908","amount":10,"reference":"R","x":`+strings.Repeat("[", 2000)+strings.Repeat("]", 2000)+`}`)
	do("POST", "/api/stk-push", auditToken, "application/json", `{"phone":"0713579909\u0000","amount":99999999999999999999,"reference":"R"}`)
	do("POST", "/api/stk-push", auditToken, "text/plain", "phone=0713579910")
	do("POST", "/api/stk-push", auditToken, "application/json", `{"phone":"0713579911",`+strings.Repeat(" ", 65<<10)+`}`)
	key := "audit-key-1"
	do("POST", "/api/stk-push", auditToken, "application/json", pushJSON("0713579912", 10, "IDEM"), "Idempotency-Key", key)
	do("POST", "/api/stk-push", auditToken, "application/json", pushJSON("0713579913", 11, "IDEM"), "Idempotency-Key", key)
	ids["idempotent"] = ""
	phones["idempotent"] = auditPhone{intl: "254713579912"}

	// Forged, replayed and malformed callbacks, to callback-ingest.
	cbBodies := forgedCallbacks(t, s, ids["success"], "254713579914")
	bodies = append(bodies, cbBodies...)
	bodies = append(bodies, mismatchedCallback(t, s, ids["held"], "254713579915"))

	// Every payment finishes; its record and events are audited too.
	for _, name := range []string{"success", "cancelled", "insufficient", "refused", "transient", "merchant", "credentials", "form", "shop"} {
		token := auditToken
		if name == "shop" {
			token = shopRotated
		}
		data := s.waitFinalAs(t, token, ids[name])
		if data["status_label"] != phones[name].label {
			t.Errorf("%s: record %v, want %s", name, data, phones[name].label)
		}
	}
	for name, id := range ids {
		if id != "" && name != "shop" {
			do("GET", "/api/stk-push/"+id, auditToken, "", "")
		}
	}
	do("GET", "/api/stk-push/"+ids["shop"], shopRotated, "", "")
	runAdmin("client", "disable", "auditshop")
	do("GET", "/api/stk-push/"+ids["shop"], shopRotated, "", "")
	stored := streamContents(t, s)

	// What must never appear, anywhere.
	secrets := []string{auditToken, auditOtherToken, auditWrongToken, auditConsumerKey, auditConsumerSec, auditPassKey,
		auditDBPassword, auditCallbackSec, auditNATSPass, shopToken, shopRotated, shopToken[:len(shopToken)-1] + "x",
		base64.StdEncoding.EncodeToString([]byte(auditConsumerKey + ":" + auditConsumerSec)),
		// The push password is base64(shortcode+passkey+timestamp): its
		// start depends on the passkey alone.
		base64.StdEncoding.EncodeToString([]byte(dispatcherShortCode + auditPassKey))[:40],
	}
	secrets = append(secrets, rec.list()...)
	for _, p := range s.fake.Pushes() {
		secrets = append(secrets, p.Body.Password)
	}
	if len(rec.list()) < 2 {
		t.Errorf("recorded %d access tokens and Authorization headers; the proxy saw no OAuth call", len(rec.list()))
	}
	// The per-request callback tokens: each lets a callback for its payment
	// through. STK_CALLBACKS keeps them, in the path of each callback kept
	// (see docs/SECURITY.md); nothing else may.
	var callbackTokens []string
	for _, id := range ids {
		if id == "" {
			continue
		}
		for _, p := range s.fake.Pushes() {
			if tok := callbackToken(p.Body.CallBackURL, id); tok != "" {
				callbackTokens = append(callbackTokens, tok)
			}
		}
	}

	serviceLogs := logs.String()
	if !strings.Contains(serviceLogs, `"service":"dispatcher"`) || !strings.Contains(serviceLogs, `"service":"callback-ingest"`) {
		t.Fatalf("the audit captured no service's logs:\n%.2000s", serviceLogs)
	}
	if len(callbackTokens) == 0 {
		t.Errorf("no push carried a callback token: is CALLBACK_SECRET read?")
	}
	where := map[string]string{
		"service logs":    serviceLogs,
		"error bodies":    strings.Join(bodies, "\n"),
		"answers":         strings.Join(answers, "\n"),
		"Daraja fake":     fakeLogs.String(),
		"streams' events": strings.Join(stored, "\n"),
		"stkgate-admin":   adminOut.String(),
	}
	for place, text := range where {
		check := secrets
		if place != "streams' events" {
			check = append(slices.Clone(secrets), callbackTokens...)
		}
		for _, secret := range check {
			if secret == "" {
				continue
			}
			if i := strings.Index(text, secret); i >= 0 {
				t.Errorf("%s show the secret %q: …%s…", place, secret, around(text, i, len(secret)))
			}
		}
	}

	// Phones: masked in logs, never in an error body.
	allPhones := []string{"0713579901", "0713579902", "0713579903", "0713579904", "0713579905", "0713579906", "0713579907",
		"0713579908", "0713579909", "0713579910", "0713579911", "0713579912", "0713579913", "0813579911", "07135799134", "254713579914",
		"254713579915", "0713579916"}
	for _, p := range phones {
		allPhones = append(allPhones, p.intl)
	}
	allPhones = append(allPhones, badPhones...)
	for place, text := range map[string]string{"service logs": serviceLogs, "Daraja fake": fakeLogs.String(), "error bodies": strings.Join(bodies, "\n")} {
		for _, p := range allPhones {
			digits := regexp.MustCompile(`\D`).ReplaceAllString(p, "")
			sub := digits[len(digits)-9:] // 7XXXXXXXX
			if i := strings.Index(text, sub); i >= 0 {
				t.Errorf("%s show the phone %s unmasked: …%s…", place, p, around(text, i, len(sub)))
			}
		}
	}
	for _, p := range []string{phones["success"].intl, "254713579915"} {
		if masked := events.MaskPhone(p); !strings.Contains(serviceLogs, masked) {
			t.Errorf("no log line names the phone masked as %s: the audit is not looking where phones are logged", masked)
		}
	}
	if t.Failed() && testing.Verbose() {
		t.Logf("service logs:\n%s", serviceLogs)
	}
}

// dispatcherShortCode is the dev stack's shortcode (DARAJA_SHORTCODE's
// default).
const dispatcherShortCode = "174379"

// withPassword puts password into a Postgres URL that has none (a server
// that trusts local connections ignores it; the services still hold it).
func withPassword(password string) func(string) string {
	return func(dbURL string) string {
		u, err := url.Parse(dbURL)
		if err != nil || u.User == nil {
			return dbURL
		}
		if _, has := u.User.Password(); has {
			return dbURL
		}
		u.User = url.UserPassword(u.User.Username(), password)
		return u.String()
	}
}

// callbackToken is the token part of a CallBackURL given for id, if any.
func callbackToken(callbackURL, id string) string {
	_, rest, ok := strings.Cut(callbackURL, events.CallbackPath+id+"/")
	if !ok {
		return ""
	}
	return rest
}

// mismatchedCallback posts to the CallBackURL of id's push (its token
// right) a success whose amount and phone are not the request's, and
// returns the answer.
func mismatchedCallback(t *testing.T, s *stack, id, phone string) string {
	t.Helper()
	push := acceptedPush(t, s, id)
	body := fmt.Sprintf(`{"Body":{"stkCallback":{"MerchantRequestID":%q,"CheckoutRequestID":%q,"ResultCode":0,"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":[{"Name":"Amount","Value":1},{"Name":"MpesaReceiptNumber","Value":"MISMATCH01"},{"Name":"TransactionDate","Value":20261126230000},{"Name":"PhoneNumber","Value":%s}]}}}}`,
		push.MerchantRequestID, push.CheckoutRequestID, phone)
	resp, err := s.cbClient.Post(push.Body.CallBackURL, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("mismatched callback = %d %s, want 200", resp.StatusCode, raw)
	}
	return fmt.Sprintf("callback POST (mismatched) → %d %s", resp.StatusCode, raw)
}

// acceptedPush waits for the push of id that Daraja accepted.
func acceptedPush(t *testing.T, s *stack, id string) darajatest.Push {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pushes := s.fake.AcceptedPushes(func(p darajatest.Push) bool { return strings.Contains(p.Body.CallBackURL, "/"+id) })
		if len(pushes) > 0 {
			return pushes[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no accepted push for %s after 30s", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// forgedCallbacks posts what an attacker or a broken sender would to
// callback-ingest and returns the answers.
func forgedCallbacks(t *testing.T, s *stack, id, phone string) []string {
	t.Helper()
	success := fmt.Sprintf(`{"Body":{"stkCallback":{"MerchantRequestID":"m-1","CheckoutRequestID":"ws_CO_forged","ResultCode":0,"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":[{"Name":"Amount","Value":1500},{"Name":"MpesaReceiptNumber","Value":"FORGED0001"},{"Name":"TransactionDate","Value":20261126230000},{"Name":"PhoneNumber","Value":%s}]}}}}`, phone)
	// The genuine URL, its token right: what a sender with a broken
	// client, or one who read the URL, would post.
	genuine := acceptedPush(t, s, id).Body.CallBackURL
	posts := []struct{ url, body string }{
		{s.cb + events.CallbackPath + id, success},                                 // no token
		{s.cb + events.CallbackPath + id + "/" + strings.Repeat("A", 43), success}, // a wrong token
		{s.cb + events.CallbackPath + "not-a-uuid", success},
		{s.cb + "/hooks/elsewhere", success},
		{genuine, `{"Body":`},
		{genuine, `{"Body":{"stkCallback":{"ResultCode":"x","PhoneNumber":` + phone + `}}}`},
		{genuine, `{"Body":{"stkCallback":{"MerchantRequestID":"m","CheckoutRequestID":"ws_CO_other","ResultCode":0,"CallbackMetadata":{"Item":[{"Name":"PhoneNumber","Value":` + phone + `}]}}}}`},
		{genuine, success}, // after the payment is final: a conflicting repeat
	}
	var out []string
	for _, p := range posts {
		resp, err := s.cbClient.Post(p.url, "application/json", strings.NewReader(p.body))
		if err != nil {
			t.Fatalf("POST %s: %v", p.url, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		where := strings.TrimPrefix(p.url, s.cb)
		if p.url == genuine {
			where = "(the push's CallBackURL)" // the token is not the answer's
		}
		out = append(out, fmt.Sprintf("callback POST %s → %d %s", where, resp.StatusCode, raw))
	}
	return out
}

// streamContents is every message of every stream: events, kept
// callbacks, attempts, advisories.
func streamContents(t *testing.T, s *stack) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []string
	names := s.nats.JS.StreamNames(ctx)
	for name := range names.Name() {
		st, err := s.nats.JS.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
			msg, err := st.GetMsg(ctx, seq)
			if err != nil {
				continue // deleted
			}
			out = append(out, fmt.Sprintf("%s %s %s %v", name, msg.Subject, msg.Data, msg.Header))
		}
	}
	if names.Err() != nil {
		t.Fatal(names.Err())
	}
	return out
}

// around is text around a match, for a failure message.
func around(text string, i, n int) string {
	lo, hi := max(i-200, 0), min(i+n+200, len(text))
	return text[lo:hi]
}
