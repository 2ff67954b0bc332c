package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
)

// encodingJSON is the answer echo's c.JSON wrote for rec, indented as with
// ?pretty when indent is set.
func encodingJSON(t testing.TB, v RecordView, indent bool) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	if indent {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(recordBody{Success: true, Data: v}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestRecordJSONMatches: the poll's answer, written by hand, is
// encoding/json's to the byte for the golden records (FuzzRecordBody, in
// api/fuzz, for any strings).
func TestRecordJSONMatches(t *testing.T) {
	t.Parallel()
	for name, rec := range goldenRecords(t) {
		v := ViewOf(rec)
		if got, want := AppendRecordBody(nil, &v), encodingJSON(t, v, false); !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
}

// TestGetAnswerBytes: GET of a record answers what c.JSON answered, to the
// byte and with the same headers, and ?pretty still indents it.
func TestGetAnswerBytes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	id := uuid.Must(uuid.NewV7()).String()
	p := payment(id, "acme")
	p.Reference = `INV<1>&"2"` // escaped by encoding/json
	e.apply(t,
		events.Requested{Payment: p},
		events.Dispatched{Payment: p, MerchantRequestID: "29115-34620561-1", CheckoutRequestID: "ws_CO_191220191020363925"},
		events.Completed{Payment: p, ResultCode: "1032", ResultDesc: "Request cancelled by user",
			Source: events.SourceCallback, MerchantRequestID: "29115-34620561-1",
			CheckoutRequestID: "ws_CO_191220191020363925", CompletedAt: fixedNow.Add(54 * time.Second)},
	)
	rec, err := e.store.Get(context.Background(), "acme", id)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query  string
		indent bool
	}{{"", false}, {"?pretty", true}, {"?pretty=0", true}, {"?x=1", false}} {
		t.Run(tc.query, func(t *testing.T) {
			w := httptest.NewRecorder()
			e.srv.ServeHTTP(w, newRequest(http.MethodGet, RecordPath+id+tc.query, acmeToken, "", ""))
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if want := encodingJSON(t, ViewOf(rec), tc.indent); !bytes.Equal(w.Body.Bytes(), want) {
				t.Errorf("body:\n got %s\nwant %s", w.Body, want)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

// BenchmarkRecordBody: the poll's answer of a paid record, by hand and by
// encoding/json (what c.JSON did).
func BenchmarkRecordBody(b *testing.B) {
	v := ViewOf(goldenRecords(b)["record-success.json"])
	b.Run("by hand", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf = AppendRecordBody(buf[:0], &v)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		var buf bytes.Buffer
		for b.Loop() {
			buf.Reset()
			if err := json.NewEncoder(&buf).Encode(recordBody{Success: true, Data: v}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
