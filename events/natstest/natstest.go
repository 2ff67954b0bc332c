// Package natstest starts an embedded JetStream server for a test, the way
// httptest starts an HTTP server: fresh storage in t.TempDir, stopped in
// t.Cleanup.
package natstest

import (
	"context"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/natsserver"
)

// Server is a running embedded server with a connection and the STK stream.
type Server struct {
	*server.Server
	URL  string // nats://127.0.0.1:<port>, for services that connect themselves
	Conn *nats.Conn
	JS   jetstream.JetStream
	// Stream is the STK stream, created as the services create it.
	Stream jetstream.Stream
}

// Start starts a server listening on a free loopback port, so that services
// under test can connect by URL, and creates the STK stream.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	stream, err := events.EnsureStream(context.Background(), js, 1)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return &Server{Server: s, URL: s.ClientURL(), Conn: nc, JS: js, Stream: stream}
}
