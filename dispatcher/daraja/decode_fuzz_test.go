package daraja

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/events"
)

// FuzzDecodeResponse feeds arbitrary answers to the three decoders: none may
// panic, every failure is an *Error of a known Kind, and a success holds
// what the caller relies on.
func FuzzDecodeResponse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "fixtures", "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, status := range []int{200, 400, 401, 404, 429, 500, 503} {
			f.Add(status, "", b)
		}
	}
	f.Add(503, "", []byte("<html><body>Service Unavailable</body></html>"))
	f.Add(429, "30", []byte(`{"fault":{"faultstring":"Spike arrest violation","detail":{"errorcode":"policies.ratelimit.SpikeArrestViolation"}}}`))
	f.Add(200, "", []byte(`{"access_token":"x","expires_in":3599}`))
	f.Add(200, "", []byte(`{"access_token":"x","expires_in":"1e400"}`))
	f.Add(200, "", []byte(`{"ResponseCode":0,"ResultCode":1032,"CheckoutRequestID":"ws_CO_1"}`))
	f.Add(200, "", []byte(`{"ResponseCode":"0","CheckoutRequestID":null}`))
	f.Add(500, "Wed, 21 Oct 2015 07:28:00 GMT", []byte(`{"errorCode":500.0031001}`))
	f.Add(200, "", []byte(`[]`))
	f.Add(204, "", []byte(nil))
	f.Add(404, "", []byte("<html><head><title>404 Not Found</title></head><body>nginx</body></html>"))
	f.Add(403, "", []byte("<html><body>The requested URL was rejected.</body></html>"))
	f.Add(400, "", []byte(nil))
	f.Add(401, "", []byte(nil))
	f.Add(400, "", []byte(`{"requestId":"r\u0000","errorCode":"400.002.02","errorMessage":"Bad Request - Invalid PhoneNumber\u0000\u001b"}`))
	f.Add(400, "", []byte(`{"errorCode":"0","errorMessage":"looks like success"}`))
	f.Add(200, "", []byte(`{"ResponseCode":"00","CheckoutRequestID":"ws_CO_\u00001","ResultCode":"0\u0000"}`))
	f.Add(200, "", []byte("{\"ResponseCode\":\"1\",\"ResponseDescription\":\"\xff\xfe\"}"))

	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		ok2xx := status >= 200 && status < 300
		check := func(op string, err error) {
			t.Helper()
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%s: error %v (%T) is not an *Error", op, err, err)
			}
			if e.Kind < KindRefused || e.Kind > KindCanceled || e.Kind == KindCanceled {
				t.Fatalf("%s: Kind %v for an answer", op, e.Kind)
			}
			if e.RetryAfter < 0 || e.RetryAfter > 10*60*1e9 {
				t.Fatalf("%s: RetryAfter %v", op, e.RetryAfter)
			}
			if e.Op != op {
				t.Fatalf("Op %q, want %q", e.Op, op)
			}
			if op == opOAuth && e.Kind == KindAmbiguous {
				t.Fatalf("an OAuth answer read as ambiguous: %v", e)
			}
			if !saneID(e.Code) || readsAsZero(e.Code) {
				t.Fatalf("%s: Code %q is empty, not sane or reads as success", op, e.Code)
			}
			if e.RequestID != "" && !saneID(e.RequestID) {
				t.Fatalf("%s: RequestID %q", op, e.RequestID)
			}
			if e.Message != events.CleanText(e.Message, events.MaxTextRunes) {
				t.Fatalf("%s: Message %q not clean", op, e.Message)
			}
			if e.Uncertain && (e.HTTPStatus != http.StatusServiceUnavailable || e.Kind != KindTransient) {
				t.Fatalf("%s: Uncertain on %v", op, e)
			}
			_ = e.Error()
		}

		tok, ttl, err := decodeToken(status, h, body)
		if err != nil {
			check(opOAuth, err)
		} else if tok == "" || ttl <= 0 || !ok2xx {
			t.Fatalf("token %q ttl %v from status %d", tok, ttl, status)
		}

		p, err := decodePush(status, h, body)
		if err != nil {
			check(opPush, err)
		} else if p.ResponseCode != "0" || !saneID(p.CheckoutRequestID) || !ok2xx ||
			(p.MerchantRequestID != "" && !saneID(p.MerchantRequestID)) ||
			p.ResponseDescription != events.CleanText(p.ResponseDescription, events.MaxTextRunes) ||
			p.CustomerMessage != events.CleanText(p.CustomerMessage, events.MaxTextRunes) {
			t.Fatalf("accepted push %+v from status %d", p, status)
		}

		q, err := decodeQuery(status, h, body)
		if err != nil {
			check(opQuery, err)
			if errors.Is(err, ErrStillProcessing) && errors.Is(err, ErrUnknownTransaction) {
				t.Fatal("both still processing and unknown")
			}
		} else if !saneID(q.ResultCode) || q.ResultCode == "4999" || !ok2xx || strings.TrimSpace(q.ResultCode) != q.ResultCode ||
			q.ResultDesc != events.CleanText(q.ResultDesc, events.MaxTextRunes) {
			t.Fatalf("final query %+v from status %d", q, status)
		}
	})
}
