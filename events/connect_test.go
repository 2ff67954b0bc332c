package events_test

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/logtest"
	"github.com/stkgate/stkgate/events/testkit/natsserver"
)

// A service started before its NATS waits for it, and says so, without the
// URL's password.
func TestConnectWaitsForAServerThatIsDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	var logs logtest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	url := "nats://user:hunter2-secret@127.0.0.1:" + strconv.Itoa(port)
	nc, err := events.Connect(url, "stkgate-test", log)
	if err != nil {
		t.Fatalf("Connect to a server that is down: %v; want it to wait", err)
	}
	defer events.Close(nc, log)
	if nc.IsConnected() {
		t.Fatal("connected to nothing")
	}

	dir := t.TempDir()
	s, err := natsserver.Start(natsserver.Options{Port: port, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()

	// nats.go calls the connect handler on a goroutine of its own, after
	// IsConnected turns true: wait for both.
	deadline := time.Now().Add(20 * time.Second)
	for !nc.IsConnected() || !strings.Contains(logs.String(), "nats connected") {
		if time.Now().After(deadline) {
			t.Fatalf("not connected, or not logged, 20s after the server started; logs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := nc.Publish("x", nil); err != nil {
		t.Fatal(err)
	}
	events.Close(nc, log)
	if !nc.IsClosed() {
		t.Error("Close left the connection open")
	}
	out := logs.String()
	if strings.Contains(out, "hunter2-secret") {
		t.Errorf("the URL's password was logged:\n%s", out)
	}
}

// A NATS_URL nats.go cannot parse comes back in its error whole, password
// included; Connect's error, which a service logs as it exits, hides it.
func TestConnectErrorHidesThePassword(t *testing.T) {
	for _, url := range []string{
		"nats://stk:pa%zzword-hunter2@nats:4222",
		"nats://stk:hunter2@nats:4222,nats://stk:pa%zzword-hunter2@nats2:4222",
	} {
		_, err := events.Connect(url, "stkgate-test", slog.New(slog.DiscardHandler))
		if err == nil {
			t.Fatalf("Connect(%q) succeeded", url)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

// ConnectJetStream gives a connection and a JetStream context on it, and
// leaves nothing open when it fails.
func TestConnectJetStream(t *testing.T) {
	s, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	log := slog.New(slog.DiscardHandler)

	nc, js, err := events.ConnectJetStream(s.ClientURL(), "stkgate-test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close(nc, log)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("the JetStream context does not answer: %v", err)
	}
	if js.Conn() != nc {
		t.Error("the JetStream context is on another connection")
	}

	nc, js, err = events.ConnectJetStream("nats://a b", "stkgate-test", log)
	if err == nil || nc != nil || js != nil {
		t.Errorf("an unparsable URL: %v, %v, %v; want an error and nothing open", nc, js, err)
	}
}
