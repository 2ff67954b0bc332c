// Package natsserver runs an embedded NATS server with JetStream, for the dev
// stack and the tests. Production runs a real nats-server cluster instead.
package natsserver

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options of an embedded server.
type Options struct {
	Host string // default 127.0.0.1
	// Port to listen on; -1 picks a free one. Ignored with DontListen.
	Port int
	// DontListen serves only in-process connections (see Connect).
	DontListen bool
	// StoreDir holds JetStream's files; required.
	StoreDir string
	// SyncAlways makes JetStream fsync every write (slower, survives power loss).
	SyncAlways bool
	// Logs turns on the server's own logging to stderr.
	Logs bool
}

// Start starts a server and waits until it accepts connections. The caller
// stops it with Shutdown and WaitForShutdown.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("natsserver: StoreDir is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	opts := &server.Options{
		ServerName: "stkgate-embedded",
		Host:       o.Host,
		Port:       o.Port,
		DontListen: o.DontListen,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		SyncAlways: o.SyncAlways,
		NoSigs:     true, // the embedding program owns the signals
		NoLog:      !o.Logs,
		// A payment event is small; the default 1 MB is plenty.
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	if o.Logs {
		s.ConfigureLogger()
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("natsserver: not ready after 10s")
	}
	return s, nil
}

// Connect opens an in-process client connection to s, which works with
// DontListen too.
func Connect(s *server.Server, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(s)}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("natsserver: connect: %w", err)
	}
	return nc, nil
}
