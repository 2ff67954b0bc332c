package callback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
)

// keptMsg is a raw copy in STK_CALLBACKS, with the headers whose values a
// test can know in advance.
type keptMsg struct {
	Subject string
	Headers map[string]string
	Body    string
}

// keptSince returns the copies stored after sequence seq, and the last
// sequence.
func (e *testEnv) keptSince(seq uint64) ([]keptMsg, []*jetstream.RawStreamMsg, uint64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.ns.JS.Stream(ctx, events.CallbackStreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	last := s.CachedInfo().State.LastSeq
	var out []keptMsg
	var raw []*jetstream.RawStreamMsg
	for n := seq + 1; n <= last; n++ {
		m, err := s.GetMsg(ctx, n)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		h := map[string]string{}
		for _, k := range []string{events.CallbackHeaderTrackingID, events.CallbackHeaderReason, events.CallbackHeaderDetail,
			events.CallbackHeaderPath, events.CallbackHeaderContentType, events.CallbackHeaderMethod,
			events.CallbackHeaderShortcode, events.CallbackHeaderReceivedAt, events.CallbackHeaderForwardedFor} {
			if v := m.Header.Get(k); v != "" {
				h[k] = v
			}
		}
		out = append(out, keptMsg{Subject: m.Subject, Headers: h, Body: string(m.Data)})
		raw = append(raw, m)
	}
	return out, raw, last
}

func (e *testEnv) lastKept() uint64 {
	e.t.Helper()
	return e.callbackStream().CachedInfo().State.LastSeq
}

// callbackStream is STK_CALLBACKS, its CachedInfo as of now.
func (e *testEnv) callbackStream() jetstream.Stream {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.ns.JS.Stream(ctx, events.CallbackStreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// TestCallbackKept: every callback, whatever becomes of it, is kept exactly
// once, raw, on the subject that says what it was, with where it came from.
func TestCallbackKept(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	success := string(readFixture(t, "success"))
	cancelled := string(readFixture(t, "cancelled"))

	fresh := uuid.NewString()
	e.request(payment(fresh))
	e.dispatch(payment(fresh), "6e86-45dd-91ac-fd5d4178ab523002867", "ws_CO_21032024143055123712345678")

	repeated := uuid.NewString()
	e.request(payment(repeated))
	e.publish("stkgate/callback-ingest", events.Completed{Payment: payment(repeated), ResultCode: "0", Receipt: "SCL4XQ2B7K",
		ResultDesc: "The service request is processed successfully.", Source: events.SourceCallback, CompletedAt: clock})

	conflict := uuid.NewString()
	e.request(payment(conflict))
	e.publish("stkgate/reconciler", events.Completed{Payment: payment(conflict), ResultCode: "1037",
		ResultDesc: "No response from user.", Source: events.SourceQuery, CompletedAt: clock})

	otherPush := uuid.NewString()
	e.request(payment(otherPush))
	e.dispatch(payment(otherPush), "m", "ws_CO_ANOTHER_PUSH")

	unknown := uuid.NewString()

	broken := uuid.NewString()
	if _, err := e.ns.JS.Publish(context.Background(), events.Subject(events.TypeRequested, broken), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}

	upper := uuid.NewString()
	e.request(payment(upper))

	// Not JSON, not UTF-8, with a NUL and a CR: kept byte for byte.
	garbage := "\x00\xff\xfeResultCode=0\r\n{\"Body\":"

	const ct = "application/json;charset=UTF-8"
	tests := []struct {
		name      string
		method    string
		path      string // after the host
		body      string
		status    int
		wantBody  string
		subject   string
		headers   map[string]string // besides path, method, content type, shortcode and received-at
		completed int               // stk.completed for the path's id after the call
	}{
		{"matched", "POST", RoutePrefix + tokenPath(fresh), success, 200, bodyAccepted,
			"stkcb.received." + fresh, map[string]string{events.CallbackHeaderTrackingID: fresh}, 1},
		{"repeated", "POST", RoutePrefix + tokenPath(repeated), success, 200, bodyAccepted,
			"stkcb.received." + repeated, map[string]string{events.CallbackHeaderTrackingID: repeated, events.CallbackHeaderReason: "repeated"}, 1},
		{"tracking id in capitals", "PUT", RoutePrefix + tokenPath(strings.ToUpper(upper)), cancelled, 200, bodyAccepted,
			"stkcb.received." + upper, map[string]string{events.CallbackHeaderTrackingID: upper}, 1},
		{"conflict", "POST", RoutePrefix + tokenPath(conflict), success, 200, bodyAccepted,
			"stkcb.unmatched.conflict", map[string]string{events.CallbackHeaderTrackingID: conflict, events.CallbackHeaderReason: "conflict"}, 1},
		{"other push", "POST", RoutePrefix + tokenPath(otherPush), success, 200, bodyAccepted,
			"stkcb.unmatched.other_push", map[string]string{events.CallbackHeaderTrackingID: otherPush, events.CallbackHeaderReason: "other_push"}, 0},
		{"unknown id", "POST", RoutePrefix + tokenPath(unknown), success, 200, bodyAccepted,
			"stkcb.unmatched.unknown_id", map[string]string{events.CallbackHeaderTrackingID: unknown, events.CallbackHeaderReason: "unknown_id"}, 0},
		{"unreadable stored request", "POST", RoutePrefix + tokenPath(broken), success, 500, bodyInternal,
			"stkcb.unmatched.unverified", map[string]string{events.CallbackHeaderTrackingID: broken, events.CallbackHeaderReason: "unverified"}, 0},
		{"unparseable", "POST", RoutePrefix + tokenPath(fresh), garbage, 400, `{"ResultCode":1,"ResultDesc":"Rejected: not JSON"}` + "\n",
			"stkcb.unmatched.unparseable", map[string]string{events.CallbackHeaderTrackingID: fresh, events.CallbackHeaderReason: "unparseable",
				events.CallbackHeaderDetail: "not JSON"}, 1},
		{"empty body", "GET", RoutePrefix + tokenPath(unknown), "", 400, `{"ResultCode":1,"ResultDesc":"Rejected: not JSON"}` + "\n",
			"stkcb.unmatched.unparseable", map[string]string{events.CallbackHeaderTrackingID: unknown, events.CallbackHeaderReason: "unparseable",
				events.CallbackHeaderDetail: "not JSON"}, 0},
		{"bare path", "POST", strings.TrimSuffix(RoutePrefix, "/"), success, 404, bodyUnknownID,
			"stkcb.unmatched.bad_path", map[string]string{events.CallbackHeaderReason: "bad_path"}, 0},
		{"bare path with slash", "POST", RoutePrefix, success, 404, bodyUnknownID,
			"stkcb.unmatched.bad_path", map[string]string{events.CallbackHeaderReason: "bad_path"}, 0},
		{"not a UUID", "POST", RoutePrefix + "not-a-uuid?x=1", success, 404, bodyUnknownID,
			"stkcb.unmatched.bad_path", map[string]string{events.CallbackHeaderReason: "bad_path"}, 0},
		{"extra segment", "POST", RoutePrefix + tokenPath(unknown) + "/again", garbage, 404, bodyUnknownID,
			"stkcb.unmatched.bad_path", map[string]string{events.CallbackHeaderReason: "bad_path"}, 0},
		{"subject wildcard", "POST", RoutePrefix + "stk.%3E", success, 404, bodyUnknownID,
			"stkcb.unmatched.bad_path", map[string]string{events.CallbackHeaderReason: "bad_path"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.lastKept()
			req, err := http.NewRequest(tt.method, e.srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", ct)
			req.Header.Set("BusinessShortCode", "174379")
			req.Header.Set("X-Forwarded-For", "196.201.214.200")
			status, body := e.do(req)
			if status != tt.status || body != tt.wantBody {
				t.Errorf("answer %d %s, want %d %s", status, body, tt.status, tt.wantBody)
			}

			got, raw, _ := e.keptSince(before)
			want := map[string]string{
				events.CallbackHeaderPath:         tt.path,
				events.CallbackHeaderMethod:       tt.method,
				events.CallbackHeaderContentType:  ct,
				events.CallbackHeaderShortcode:    "174379",
				events.CallbackHeaderForwardedFor: "196.201.214.200",
				events.CallbackHeaderReceivedAt:   clock.Format(time.RFC3339Nano),
			}
			for k, v := range tt.headers {
				want[k] = v
			}
			if diff := cmp.Diff([]keptMsg{{Subject: tt.subject, Headers: want, Body: tt.body}}, got); diff != "" {
				t.Fatalf("kept copies (-want +got):\n%s", diff)
			}
			m := raw[0]
			if id := m.Header.Get(events.CallbackHeaderID); uuid.Validate(id) != nil || m.Header.Get(jetstream.MsgIDHeader) != id {
				t.Errorf("callback id %q, Nats-Msg-Id %q", id, m.Header.Get(jetstream.MsgIDHeader))
			}
			if !strings.Contains(e.logs.String(), `"callback_id":"`+m.Header.Get(events.CallbackHeaderID)+`"`) {
				t.Error("the callback id is not in the logs")
			}
			if addr := m.Header.Get(events.CallbackHeaderRemoteAddr); !strings.HasPrefix(addr, "127.0.0.1:") {
				t.Errorf("remote address %q", addr)
			}
			if id := m.Header.Get(events.CallbackHeaderTrackingID); id != "" {
				if n, _ := e.completed(id); n != tt.completed {
					t.Errorf("%d stk.completed, want %d", n, tt.completed)
				}
			}
		})
	}

	// A second delivery of the same callback is a second copy.
	before := e.lastKept()
	if status, body := e.post(http.MethodPost, fresh, strings.NewReader(success)); status != 200 || body != bodyAccepted {
		t.Errorf("repeat: answer %d %s", status, body)
	}
	if got, _, _ := e.keptSince(before); len(got) != 1 || got[0].Subject != "stkcb.received."+fresh || got[0].Headers[events.CallbackHeaderReason] != "repeated" {
		t.Errorf("repeat kept as %+v", got)
	}
	if n, _ := e.completed(fresh); n != 1 {
		t.Errorf("%d stk.completed after the repeat, want 1", n)
	}
}

// TestCallbackKeptTooLarge: a body over the limit is refused unread, and
// nothing of it is kept.
func TestCallbackKeptTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.request(payment(id))
	before := e.lastKept()
	if status, _ := e.post(http.MethodPost, id, bytes.NewReader(make([]byte, MaxBodyBytes+1))); status != 413 {
		t.Errorf("status %d, want 413", status)
	}
	if got, _, _ := e.keptSince(before); len(got) != 0 {
		t.Errorf("kept %d copies", len(got))
	}
}

// TestCallbackKeepFails: when the raw copy cannot be stored the answer is
// 503 and nothing is published; once it can, the callback is taken.
func TestCallbackKeepFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, time.Second)
	ctx := context.Background()
	success := readFixture(t, "success")

	t.Run("stream refuses", func(t *testing.T) {
		id := uuid.NewString()
		e.requestDispatched(payment(id))
		full := events.CallbackStreamConfig(1)
		full.MaxMsgs = 1
		full.Discard = jetstream.DiscardNew
		if _, err := e.ns.JS.UpdateStream(ctx, full); err != nil {
			t.Fatal(err)
		}
		// Fill it (an empty stream takes one more).
		if _, err := e.ns.JS.Publish(ctx, events.CallbackSubjectUnmatched("filler"), nil); err != nil {
			t.Fatal(err)
		}
		before := e.lastKept()
		for _, path := range []string{id, "not-a-uuid"} {
			for _, body := range []string{string(success), "garbage"} {
				if status, got := e.post(http.MethodPost, path, strings.NewReader(body)); status != 503 || got != bodyUnavailable {
					t.Errorf("%s %q: answer %d %s, want 503", path, body, status, got)
				}
			}
		}
		if n, _ := e.completed(id); n != 0 {
			t.Errorf("%d stk.completed, want none", n)
		}
		if got, _, _ := e.keptSince(before); len(got) != 0 {
			t.Errorf("kept %d", len(got))
		}
		if !strings.Contains(e.logs.String(), `"msg":"keep callback: not stored, answering 503"`) {
			t.Errorf("the failure was not logged:\n%s", e.logs.String())
		}

		if _, err := e.ns.JS.UpdateStream(ctx, events.CallbackStreamConfig(1)); err != nil {
			t.Fatal(err)
		}
		if status, got := e.post(http.MethodPost, id, bytes.NewReader(success)); status != 200 || got != bodyAccepted {
			t.Errorf("once the stream takes it: answer %d %s", status, got)
		}
		if n, _ := e.completed(id); n != 1 {
			t.Errorf("%d stk.completed, want 1", n)
		}
	})

	t.Run("stream missing", func(t *testing.T) {
		id := uuid.NewString()
		e.request(payment(id))
		if err := e.ns.JS.DeleteStream(ctx, events.CallbackStreamName); err != nil {
			t.Fatal(err)
		}
		if status, got := e.post(http.MethodPost, id, bytes.NewReader(success)); status != 503 || got != bodyUnavailable {
			t.Errorf("answer %d %s, want 503", status, got)
		}
		if n, _ := e.completed(id); n != 0 {
			t.Errorf("%d stk.completed, want none", n)
		}
	})
}

// TestCallbackKeptBeforePublished: the raw copy is stored before the
// stk.completed it leads to.
func TestCallbackKeptBeforePublished(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.requestDispatched(payment(id))
	if status, _ := e.post(http.MethodPost, id, bytes.NewReader(readFixture(t, "success"))); status != 200 {
		t.Fatalf("status %d", status)
	}
	_, raw, _ := e.keptSince(0)
	_, comp := e.completed(id)
	if len(raw) != 1 || comp == nil {
		t.Fatalf("kept %d, stk.completed %v", len(raw), comp)
	}
	if raw[0].Time.After(comp.Time) {
		t.Errorf("copy stored at %v, after stk.completed at %v", raw[0].Time, comp.Time)
	}
}

// TestHeaderValue: request values cannot break a NATS header.
func TestHeaderValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in    string
		limit int
		want  string
	}{
		{"plain", 10, "plain"},
		{" a\r\nb\x00c ", 10, "a  b c"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"}, // é is two bytes: not split
		{"", 5, ""},
	}
	for _, tt := range tests {
		if got := headerValue(tt.in, tt.limit); got != tt.want {
			t.Errorf("headerValue(%q, %d) = %q, want %q", tt.in, tt.limit, got, tt.want)
		}
	}
}

// TestCallbackKeptTruncated: a sender that hangs up mid-body leaves what it
// sent, and that is kept.
func TestCallbackKeptTruncated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	id := uuid.NewString()
	e.request(payment(id))
	before := e.lastKept()

	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	const part = `{"Body":{"stkCallback":{"MerchantRequestID":"29115`
	fmt.Fprintf(conn, "POST %s%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n%s", RoutePrefix, tokenPath(id), part)
	conn.(*net.TCPConn).CloseWrite()
	_, _ = io.ReadAll(conn) // the answer, if the server still sends one
	conn.Close()

	var got []keptMsg
	deadline := time.Now().Add(5 * time.Second)
	for len(got) == 0 && time.Now().Before(deadline) {
		got, _, _ = e.keptSince(before)
		time.Sleep(10 * time.Millisecond)
	}
	if len(got) != 1 {
		t.Fatalf("kept %d copies, want 1", len(got))
	}
	if got[0].Subject != "stkcb.unmatched.unparseable" || got[0].Body != part ||
		got[0].Headers[events.CallbackHeaderDetail] != "body unreadable" || got[0].Headers[events.CallbackHeaderTrackingID] != id {
		t.Errorf("kept %+v", got[0])
	}
	if n, _ := e.completed(id); n != 0 {
		t.Errorf("%d stk.completed, want none", n)
	}
}
