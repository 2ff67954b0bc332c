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

	"github.com/stkgate/stkgate/api/store"
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

// TestRecordOfMatchesView: the poll's answer written from the record is
// the one written from its view (AppendRecordBody, itself held to
// encoding/json's bytes), for the golden records and records with every
// field set or empty.
func TestRecordOfMatchesView(t *testing.T) {
	t.Parallel()
	recs := goldenRecords(t)
	at := time.Date(2026, 12, 7, 11, 56, 51, 999999999, time.FixedZone("EAT", 3*3600))
	recs["every field"] = store.Record{
		ID: 42, TrackingID: "0193a9d8-8f7e-7b3c-9a1e-1234567890ab", PhoneNumber: "254712345678", Amount: -1500,
		Reference: `INV<1>&"2"`, Tag: "tag\u2028", Status: 1, StatusLabel: "Success", ResponseCode: "0",
		ResponseDescription: "The service request is processed successfully.", TransactionCode: "NLJ7RT61SV",
		MerchantRequestID: "29115-34620561-1", CheckoutRequestID: "ws_CO_191220191020363925",
		TransactionDate: "2026-12-07 14:56:51", CreatedAt: at, UpdatedAt: at.Add(time.Hour),
		LateResult: &store.LateResult{ResponseCode: "0", ResponseDescription: "paid\x00", StatusLabel: "Success",
			TransactionCode: "X", TransactionDate: "d", MerchantRequestID: "m", CheckoutRequestID: "c",
			Source: "query", LearntAt: at.Add(-time.Minute)},
	}
	recs["empty"] = store.Record{LateResult: &store.LateResult{}}
	for name, rec := range recs {
		v := ViewOf(rec)
		if got, want := appendRecordOf(nil, &rec), AppendRecordBody(nil, &v); !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
}

func FuzzRecordOf(f *testing.F) {
	f.Add(int64(1), int64(1500), 0, int64(1796627271369959102), true, "a", "", "<\xff\u2028")
	f.Add(int64(-1), int64(-9), 1, int64(-62135596800000000), false, "", "\"\\", "")
	f.Fuzz(func(t *testing.T, id, amount int64, status int, nanos int64, late bool, a, b, c string) {
		at := time.Unix(0, nanos)
		rec := store.Record{ID: id, TrackingID: a, PhoneNumber: b, Amount: amount, Reference: c, Tag: a,
			Status: status, StatusLabel: b, ResponseCode: c, ResponseDescription: a, TransactionCode: b,
			MerchantRequestID: c, CheckoutRequestID: a, TransactionDate: b, CreatedAt: at, UpdatedAt: at.Add(time.Second)}
		if late {
			rec.LateResult = &store.LateResult{ResponseCode: a, ResponseDescription: b, StatusLabel: c,
				TransactionCode: a, TransactionDate: b, MerchantRequestID: c, CheckoutRequestID: a, Source: b, LearntAt: at}
		}
		v := ViewOf(rec)
		if got, want := appendRecordOf(nil, &rec), AppendRecordBody(nil, &v); !bytes.Equal(got, want) {
			t.Errorf("got %s\nwant %s", got, want)
		}
	})
}

// TestReadContextsDeadline: a poll's read is given at least readTimeout
// and at most readContextSlack more, and polls begun close together share
// one context.
func TestReadContextsDeadline(t *testing.T) {
	t.Parallel()
	var r readContexts
	t0 := time.Now()
	check := func(at time.Time) context.Context {
		t.Helper()
		ctx := r.get(at)
		d, ok := ctx.Deadline()
		if !ok || d.Sub(at) < readTimeout || d.Sub(at) > readTimeout+readContextSlack {
			t.Fatalf("read begun at +%s has deadline +%s, want within [%s, %s]", at.Sub(t0), d.Sub(t0), readTimeout, readTimeout+readContextSlack)
		}
		if ctx.Err() != nil {
			t.Fatalf("read begun at +%s: context already done: %v", at.Sub(t0), ctx.Err())
		}
		return ctx
	}
	first := check(t0)
	if again := check(t0.Add(readContextSlack / 2)); again != first {
		t.Error("a read begun within the slack has a context of its own")
	}
	if later := check(t0.Add(readContextSlack + time.Millisecond)); later == first {
		t.Error("a read begun past the slack shares a context that ends too soon")
	}
}
