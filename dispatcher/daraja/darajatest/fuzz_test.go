package darajatest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/dispatcher/daraja"
)

// FuzzRequest feeds arbitrary push and query requests to the fake, which
// faces outside input as the dev stack's simulator: it must answer each
// with Daraja's success shape or Daraja's error envelope, never panic.
func FuzzRequest(f *testing.F) {
	s, err := NewServer(Options{CallbackDelay: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	s.mu.Lock()
	s.tokens["fuzz-token"] = time.Now().Add(24 * time.Hour)
	s.mu.Unlock()

	ts := daraja.Timestamp(time.Now())
	pw := daraja.Password(DefaultShortCode, DefaultPassKey, ts)
	valid := `{"BusinessShortCode":"174379","Password":"` + pw + `","Timestamp":"` + ts + `","TransactionType":"CustomerPayBillOnline","Amount":1,"PartyA":"254712345678","PartyB":"174379","PhoneNumber":"254712345678","CallBackURL":"https://pay.example.com/cb","AccountReference":"A","TransactionDesc":"Payment"}`
	f.Add(false, []byte(valid), "application/json")
	f.Add(false, []byte(strings.Replace(valid, `"Amount":1`, `"Amount":1.5`, 1)), "application/json")
	f.Add(false, []byte(strings.Replace(valid, `"Amount":1`, `"Amount":"1e3"`, 1)), "application/json")
	f.Add(false, []byte(strings.Replace(valid, `"254712345678"`, `254712345678`, 2)), "application/json; charset=utf-8")
	f.Add(false, []byte(valid), "text/plain")
	f.Add(false, []byte(`{"PhoneNumber":null}`), "application/json")
	f.Add(false, []byte(`[]`), "application/json")
	f.Add(false, []byte(`null`), "application/json")
	f.Add(true, []byte(`{"BusinessShortCode":"174379","Password":"`+pw+`","Timestamp":"`+ts+`","CheckoutRequestID":"ws_CO_1"}`), "application/json")
	f.Add(true, []byte(`{"CheckoutRequestID":12}`), "application/json")

	f.Fuzz(func(t *testing.T, isQuery bool, body []byte, contentType string) {
		path := daraja.PathPush
		if isQuery {
			path = daraja.PathQuery
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer fuzz-token")
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		s.srv.Handler.ServeHTTP(rec, req)

		switch rec.Code {
		case http.StatusOK:
			var ok map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &ok); err != nil || ok["ResponseCode"] != "0" {
				t.Fatalf("200 without Daraja's answer: %s", rec.Body.Bytes())
			}
			if id, _ := ok["CheckoutRequestID"].(string); !strings.HasPrefix(id, "ws_CO_") && !isQuery {
				t.Fatalf("accepted push without a CheckoutRequestID: %s", rec.Body.Bytes())
			}
		case http.StatusBadRequest, http.StatusNotFound, http.StatusInternalServerError:
			var env envelope
			if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.ErrorCode == "" || env.ErrorMessage == "" {
				t.Fatalf("%d without Daraja's envelope: %s", rec.Code, rec.Body.Bytes())
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.Bytes())
		}
	})
}
