// Package natstest starts an embedded JetStream server for a test, the way
// httptest starts an HTTP server: fresh storage in t.TempDir, stopped in
// t.Cleanup.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/testkit/natsserver"
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
	// A loaded machine (CI, tests side by side) can take longer than
	// nats.go's default 2 s to answer the connect.
	nc, err := nats.Connect(s.ClientURL(), nats.Timeout(20*time.Second))
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	// Its own deadline: without one the JetStream API's 5 s default
	// applies, which a loaded CI machine ran out of creating the stream.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := events.EnsureStream(ctx, js, 1)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return &Server{Server: s, URL: s.ClientURL(), Conn: nc, JS: js, Stream: stream}
}

// LaggingReplica adds to the STK stream a direct-get responder that is
// always behind: a mirror answering direct gets (MirrorDirect) that copies
// only stk.completed. JetStream spreads direct gets over a stream's own
// replicas and such mirrors, as it spreads them over the three replicas of
// a clustered stream, one of which may not have caught up yet; this one
// never catches up, so about half the direct gets for anything but a
// completion answer "not found" — what a lagging follower answers, without
// a cluster and without timing it.
func (s *Server) LaggingReplica(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.JS.CreateStream(ctx, jetstream.StreamConfig{
		Name:         events.StreamName + "_LAGGING",
		Storage:      jetstream.MemoryStorage,
		Mirror:       &jetstream.StreamSource{Name: events.StreamName, FilterSubject: events.Subject(events.TypeCompleted, "*")},
		MirrorDirect: true,
	})
	if err != nil {
		t.Fatalf("natstest: lagging mirror: %v", err)
	}
	// A mirror answers direct gets once it has copied a message: give it
	// one, a completion of a payment no test uses.
	p := events.Payment{TrackingID: "00000000-0000-4000-8000-00000000dead", Client: "natstest", Phone: "254700000000", Amount: 1, Reference: "lagging"}
	pub := &events.Publisher{JS: s.JS, Source: "natstest"}
	if _, err := pub.Publish(ctx, events.Completed{Payment: p, ResultCode: "0", Source: events.SourceCallback}); err != nil {
		t.Fatalf("natstest: lagging mirror: %v", err)
	}
	for {
		m, err := s.JS.Stream(ctx, events.StreamName+"_LAGGING")
		if err == nil && m.CachedInfo().State.Msgs > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("natstest: the lagging mirror copied nothing: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
