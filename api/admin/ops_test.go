package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/admin"
	"github.com/stkgate/stkgate/api/deadletter"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natstest"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

// natsWithStreams is a JetStream server with every stream stkgate makes.
func natsWithStreams(t *testing.T) *natstest.Server {
	t.Helper()
	ns := natstest.Start(t)
	ctx := context.Background()
	for _, ensure := range []func(context.Context, jetstream.JetStream, int) (jetstream.Stream, error){
		events.EnsureCallbackStream, events.EnsurePushLogStream, events.EnsureAdvisoryStream, events.EnsureDeadLetterStream,
	} {
		if _, err := ensure(ctx, ns.JS, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ns.JS.CreateKeyValue(ctx, events.AttemptsConfig(1)); err != nil {
		t.Fatal(err)
	}
	return ns
}

const (
	phone   = "254712345678"
	cbToken = "SecretCallbackToken0123456789abcdef"
)

// noSecrets fails if out shows a whole phone number or a callback token.
func noSecrets(t *testing.T, what, out string) {
	t.Helper()
	if strings.Contains(out, phone) || strings.Contains(out, "712345678") || strings.Contains(out, cbToken) {
		t.Errorf("%s shows a phone number or a callback token:\n%s", what, out)
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	ns := natsWithStreams(t)
	ctx := context.Background()
	p := newPay(1, "0")
	other := newPay(2, "1032")
	publish(t, ns.JS, p.requested, other.requested)
	// Daraja's error text may quote the phone: shown masked, in JSON too.
	a := events.Attempt{TrackingID: p.id, State: events.AttemptSending, Calls: 1, SentAt: time.Now(),
		ErrorCode: "500.001.1001", ErrorMessage: "subscriber 254712345678 busy"}
	b, _ := json.Marshal(a)
	if _, err := ns.JS.Publish(ctx, events.PushLogSubject(p.id), b); err != nil {
		t.Fatal(err)
	}
	publish(t, ns.JS, p.dispatched)
	cb := &nats.Msg{Subject: events.CallbackSubjectReceived(p.id), Header: nats.Header{}, Data: []byte(`{"Body":{"stkCallback":{
		"MerchantRequestID":"m","CheckoutRequestID":"` + p.dispatched.CheckoutRequestID + `","ResultCode":0,"ResultDesc":"ok",
		"CallbackMetadata":{"Item":[{"Name":"Amount","Value":101},{"Name":"PhoneNumber","Value":254712345678}]}}}}`)}
	cb.Header.Set(events.CallbackHeaderPath, events.CallbackPath+p.id+"/"+cbToken)
	cb.Header.Set(events.CallbackHeaderRemoteAddr, "196.201.214.200:443")
	cb.Header.Set(events.CallbackHeaderDetail, "phone 254712345678 differs")
	if _, err := ns.JS.PublishMsg(ctx, cb); err != nil {
		t.Fatal(err)
	}
	publish(t, ns.JS, p.completed, other.completed)
	refused := &nats.Msg{Subject: events.CallbackSubjectRefused(events.UnmatchedForbiddenSource, p.id), Header: nats.Header{}, Data: cb.Data}
	refused.Header.Set(events.CallbackHeaderReason, events.UnmatchedForbiddenSource)
	refused.Header.Set(events.CallbackHeaderPath, events.CallbackPath+p.id+"/"+cbToken+"?x=1")
	if _, err := ns.JS.PublishMsg(ctx, refused); err != nil {
		t.Fatal(err)
	}
	dl := &nats.Msg{Subject: events.DeadLetterSubject(events.ConsumerDispatcher, p.id), Header: nats.Header{}, Data: []byte(`{"data":{"phone":"254712345678"}}`)}
	dl.Header.Set(events.DeadLetterHeaderConsumer, events.ConsumerDispatcher)
	dl.Header.Set(events.DeadLetterHeaderReason, events.DeadLetterTerminated)
	dl.Header.Set(events.DeadLetterHeaderTermReason, "phone 254712345678 refused")
	dl.Header.Set(events.DeadLetterHeaderSubject, "stk.requested."+p.id)
	dl.Header.Set(events.DeadLetterHeaderStream, events.StreamName)
	dl.Header.Set(events.DeadLetterHeaderStreamSeq, "1")
	if _, err := ns.JS.PublishMsg(ctx, dl); err != nil {
		t.Fatal(err)
	}
	kv, err := ns.JS.KeyValue(ctx, events.AttemptsBucket)
	if err != nil {
		t.Fatal(err)
	}
	a.State, a.CheckoutRequestID, a.UpdatedAt = events.AttemptAccepted, p.dispatched.CheckoutRequestID, time.Now()
	b, _ = json.Marshal(a)
	if _, err := kv.Put(ctx, p.id, b); err != nil {
		t.Fatal(err)
	}
	d := admin.Deps{JS: ns.JS}

	r := runDeps(t, d, "history", p.id)
	if r.code != admin.ExitOK {
		t.Fatalf("history: exit %d: %s", r.code, r.stderr)
	}
	noSecrets(t, "history", r.stdout)
	want := []string{`STK:\d+ +stk.requested +client acme, 101 KES from \*+678`, `STK_PUSHES:1 +push`, `STK:\d+ +stk.dispatched`,
		`STK_CALLBACKS:1 +callback +received: ResultCode 0 "ok"`, `STK:\d+ +stk.completed +Success by callback`, `STK_CALLBACKS:2 +callback +unmatched \(forbidden_source\): ResultCode 0`,
		`STK_DLQ:1 +dead letter +dispatcher gave up on stk.requested.\S+ \(STK:1\): terminated phone \*+678 refused`, `STK_ATTEMPTS:\d+ +attempt +now accepted`}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != len(want)+1 {
		t.Fatalf("history has %d lines, want %d:\n%s", len(lines), len(want)+1, r.stdout)
	}
	for i, w := range want {
		if !regexp.MustCompile(w).MatchString(lines[i+1]) {
			t.Errorf("line %d is not %q:\n%s", i+1, w, r.stdout)
		}
	}
	if strings.Contains(r.stdout, other.id) || strings.Contains(r.stdout, "1032") {
		t.Errorf("history shows another payment:\n%s", r.stdout)
	}

	r = runDeps(t, d, "history", "--json", p.id)
	if r.code != admin.ExitOK {
		t.Fatalf("history --json: exit %d: %s", r.code, r.stderr)
	}
	noSecrets(t, "history --json", r.stdout)
	var h struct {
		TrackingID string `json:"tracking_id"`
		History    []struct {
			Kind    string            `json:"kind"`
			Headers map[string]string `json:"headers"`
			Body    json.RawMessage   `json:"body"`
		} `json:"history"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || h.TrackingID != p.id || len(h.History) != len(want) {
		t.Fatalf("history --json: %v:\n%s", err, r.stdout)
	}
	if cb := h.History[3]; cb.Headers[events.CallbackHeaderPath] != events.CallbackPath+p.id+"/REDACTED" || !strings.Contains(compact(cb.Body), `"Value":"*********678"`) {
		t.Errorf("callback: %+v %s", cb.Headers, cb.Body)
	}
	if !strings.Contains(compact(h.History[0].Body), `"phone":"*********678"`) {
		t.Errorf("requested body: %s", h.History[0].Body)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"history"}, admin.ExitUsage, "history takes TRACKING_ID"},
		{[]string{"history", "not-an-id"}, admin.ExitUsage, "TRACKING_ID is not a UUID"},
		{[]string{"history", newPay(3, "0").id}, admin.ExitError, "nothing is kept of payment"},
	} {
		if r := runDeps(t, d, tc.args...); r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, %s", tc.args, r.code, r.stderr)
		}
	}
}

func compact(b []byte) string {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return string(b)
	}
	return out.String()
}

func TestDLQ(t *testing.T) {
	t.Parallel()
	ns := natsWithStreams(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- deadletter.Run(ctx, deadletter.Config{JS: ns.JS, Replicas: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	t.Cleanup(func() { cancel(); <-done })

	// The dispatcher gives a request up.
	p := newPay(1, "0")
	publish(t, ns.JS, p.requested)
	cons, err := ns.JS.CreateOrUpdateConsumer(ctx, events.StreamName, events.DispatcherConsumer())
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := cons.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for m := range msgs.Messages() {
		if err := m.TermWithReason("test: cannot"); err != nil {
			t.Fatal(err)
		}
	}
	streamMsgs := func(name string) uint64 {
		s, err := ns.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	wait.For(t, "the dead letter", func() bool { return streamMsgs(events.DeadLetterStreamName) == 1 })
	d := admin.Deps{JS: ns.JS}

	r := runDeps(t, d, "dlq", "list")
	if r.code != admin.ExitOK || !regexp.MustCompile(`(?m)^1 +\S+ \S+ +dispatcher +terminated +`+p.id+` +stk.requested.`+p.id+` STK:1 +1$`).MatchString(r.stdout) {
		t.Errorf("dlq list: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runDeps(t, d, "dlq", "list", "--json")
	var dls []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &dls); err != nil || len(dls) != 1 || dls[0]["original_msg_id"] != p.id+":requested" {
		t.Errorf("dlq list --json: %v:\n%s", err, r.stdout)
	}
	r = runDeps(t, d, "dlq", "show", "1")
	noSecrets(t, "dlq show", r.stdout)
	for _, want := range []string{"Stkgate-Dlq-Term-Reason: test: cannot", "Stkgate-Dlq-Subject: stk.requested." + p.id, `"phone":"*********678"`} {
		if r.code != admin.ExitOK || !strings.Contains(r.stdout, want) {
			t.Errorf("dlq show lacks %q: exit %d:\n%s%s", want, r.code, r.stdout, r.stderr)
		}
	}

	before := streamMsgs(events.StreamName)
	r = runDeps(t, d, "dlq", "replay", "1")
	if r.code != admin.ExitError || !strings.Contains(r.stderr, "add --yes") || streamMsgs(events.StreamName) != before {
		t.Errorf("replay without --yes: exit %d, %s", r.code, r.stderr)
	}
	// Within the duplicate window JetStream drops it.
	r = runDeps(t, d, "dlq", "replay", "1", "--yes")
	if r.code != admin.ExitOK || !strings.Contains(r.stdout, "dropped it as a duplicate of STK:1") || streamMsgs(events.StreamName) != before {
		t.Errorf("replay within the window: exit %d, %s%s", r.code, r.stdout, r.stderr)
	}
	// Past it (shortened here), it is stored again, as it was. The window
	// is shortened twice: nats-server (v2.15.2, stream.go) fires its purge
	// of message ids when the window changes but sets the new window only
	// later in the update, so a purge that runs in between uses the old
	// window of minutes and does not look again for as long. A second
	// change purges with the first's short window (a CI run failed here,
	// a loop of updates under load hit it once in 100).
	cfg := events.StreamConfig(1)
	for _, w := range []time.Duration{100 * time.Millisecond, 101 * time.Millisecond} {
		cfg.Duplicates = w
		if _, err := ns.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, "the replay is stored", func() bool {
		r = runDeps(t, d, "dlq", "replay", "--yes", "1")
		return strings.Contains(r.stdout, "replayed as STK:2 on stk.requested."+p.id)
	})
	s, _ := ns.JS.Stream(ctx, events.StreamName)
	orig, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.GetMsg(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if again.Subject != orig.Subject || string(again.Data) != string(orig.Data) || again.Header.Get(jetstream.MsgIDHeader) != orig.Header.Get(jetstream.MsgIDHeader) {
		t.Errorf("replayed %s %q %v, want %s %q %v", again.Subject, again.Data, again.Header, orig.Subject, orig.Data, orig.Header)
	}

	// A dead letter is replayed only as the stream holds its original:
	// anyone who can publish to stkdlq.> could forge one.
	forged := p.completed
	forged.Receipt = "FORGED1234"
	fb, err := json.Marshal(forged)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name, subject, msgID, seq string
		body                      []byte
		want                      string
	}{
		{"no original sequence", "stk.completed." + p.id, p.id + ":completed", "", fb, "no original sequence"},
		{"an original not in the stream", "stk.completed." + p.id, p.id + ":completed", "99", fb, "STK:99 is not in the stream"},
		{"another subject", "stk.completed." + p.id, p.id + ":completed", "1", fb, "STK:1 is on stk.requested." + p.id + ", not stk.completed." + p.id},
		{"another id", "stk.requested." + p.id, p.id + ":other", "1", orig.Data, "STK:1 has Nats-Msg-Id " + p.id + ":requested"},
		{"another body", "stk.requested." + p.id, p.id + ":requested", "1", fb, "its body is not STK:1's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &nats.Msg{Subject: events.DeadLetterSubject(events.ConsumerDispatcher, p.id), Header: nats.Header{}, Data: tc.body}
			m.Header.Set(events.DeadLetterHeaderConsumer, events.ConsumerDispatcher)
			m.Header.Set(events.DeadLetterHeaderReason, events.DeadLetterTerminated)
			m.Header.Set(events.DeadLetterHeaderTrackingID, p.id)
			m.Header.Set(events.DeadLetterHeaderSubject, tc.subject)
			m.Header.Set(events.DeadLetterHeaderStream, events.StreamName)
			m.Header.Set(events.DeadLetterHeaderOriginalID, tc.msgID)
			if tc.seq != "" {
				m.Header.Set(events.DeadLetterHeaderStreamSeq, tc.seq)
			}
			ack, err := ns.JS.PublishMsg(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			before := streamMsgs(events.StreamName)
			r := runDeps(t, d, "dlq", "replay", "--yes", fmt.Sprint(ack.Sequence))
			if r.code != admin.ExitError || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "not replayed") || streamMsgs(events.StreamName) != before {
				t.Errorf("case %d: exit %d, %s%s\nwant %q", i, r.code, r.stdout, r.stderr, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dlq", "show"}, admin.ExitUsage, "dlq show takes SEQ"},
		{[]string{"dlq", "show", "x"}, admin.ExitUsage, `SEQ "x" is not a sequence number`},
		{[]string{"dlq", "show", "9"}, admin.ExitError, "no dead letter 9"},
		{[]string{"dlq", "replay", "9", "--yes"}, admin.ExitError, "no dead letter 9"},
		{[]string{"dlq", "purge"}, admin.ExitUsage, `unknown command "dlq purge"`},
	} {
		if r := runDeps(t, d, tc.args...); r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, %s", tc.args, r.code, r.stderr)
		}
	}
}

func TestLag(t *testing.T) {
	ns := natsWithStreams(t)
	ctx := context.Background()
	if _, err := ns.JS.CreateOrUpdateConsumer(ctx, events.StreamName, events.ProjectorConsumer()); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.JS.CreateOrUpdateConsumer(ctx, events.CallbackStreamName, events.CallbackApplyConsumer()); err != nil {
		t.Fatal(err)
	}
	p, q := newPay(1, "0"), newPay(2, "0")
	publish(t, ns.JS, p.requested, q.requested, p.dispatched)
	d := admin.Deps{JS: ns.JS}

	r := runDeps(t, d, "lag")
	if r.code != admin.ExitOK ||
		!regexp.MustCompile(`(?m)^STK +projector +3 +0 +0 +0 +- +- +behind$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^STK_CALLBACKS +callback-apply +0 +0 +0 +0 +- +- +ok$`).MatchString(r.stdout) {
		t.Errorf("lag: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runDeps(t, d, "lag", "--fail-above", "2"); r.code != admin.ExitError || !strings.Contains(r.stderr, "pending above 2: STK/projector (3)") {
		t.Errorf("--fail-above 2: exit %d, %s", r.code, r.stderr)
	}
	if r := runDeps(t, d, "lag", "--fail-above=3"); r.code != admin.ExitOK {
		t.Errorf("--fail-above 3: exit %d, %s", r.code, r.stderr)
	}
	wait.For(t, "the projector consumer looks stuck", func() bool {
		r = runDeps(t, d, "lag", "--stuck-after", "1ms", "--json")
		var rows []struct {
			Consumer string `json:"consumer"`
			Pending  int    `json:"pending"`
			Stuck    bool   `json:"stuck"`
			State    string `json:"state"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
			t.Fatalf("lag --json: %v:\n%s", err, r.stdout)
		}
		for _, row := range rows {
			if row.Consumer == "projector" {
				return row.Pending == 3 && row.Stuck && strings.Contains(row.State, "nobody pulling")
			}
		}
		return false
	})
	if r := runDeps(t, d, "lag", "--stuck-after", "0s"); r.code != admin.ExitUsage {
		t.Errorf("--stuck-after 0: exit %d", r.code)
	}
}
