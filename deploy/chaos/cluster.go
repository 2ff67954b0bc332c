package main

// The cluster run (issue 13, make cluster-test): three nats-servers
// clustered on loopback, every stream and bucket three replicas, and
// Options.Instances instances of each service behind a balancer, loaded
// while the faults a cluster must ride out are injected one after the
// other: the STK stream leader's node stopped and started again, the next
// leader's killed -9 and started again, kill -9 of one instance of each
// service, stream and consumer leadership moved
// by stepdown, and a rolling restart (SIGTERM each instance in turn, which
// must drain and exit 0 within the stop deadline). The money guarantees
// are chaos's (report.go); what the cluster adds is judged and printed
// from clusterFigures.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stkgate/stkgate/deploy/binaries"
	"github.com/stkgate/stkgate/events"
)

const (
	clusterNodes = 3
	// stopDeadline is how long an instance may take to exit after SIGTERM:
	// docker compose's default stop_grace_period (deploy/container runs
	// the services without another), after which it is killed.
	stopDeadline = 10 * time.Second
	// hungAfter is when a SIGTERMed instance is killed and called hung.
	hungAfter = 60 * time.Second
	// faultGap is the steady load between two faults, so that each
	// fault's recovery is measured on its own.
	faultGap = 3 * time.Second
	// recoveryWindow bounds the search for a fault's recovery.
	recoveryWindow = 60 * time.Second
)

// clusterServices are the services run Options.Instances times each, in
// start order.
var clusterServices = []string{"projector", "api", "dispatcher", "callback-ingest"}

func instanceName(service string, i int) string { return fmt.Sprintf("%s-%d", service, i) }

// setUpCluster starts Postgres, the fake Daraja, the three nats-servers,
// and Options.Instances instances of each service, the api's and
// callback-ingest's behind a balancer each: the nodes configured
// (configureNATS), the balancers put up (balance), every process added
// (addClusterProcs) and then started in order (startCluster).
func (r *runner) setUpCluster(ctx context.Context) error {
	if err := r.prepare(ctx); err != nil {
		return err
	}
	nodes, confs, err := r.configureNATS()
	if err != nil {
		return err
	}
	apiAddrs, cbAddrs, err := r.balance()
	if err != nil {
		return err
	}
	if err := r.startSim(ctx, r.o.Bin); err != nil {
		return err
	}
	// env's API_ADDR and CALLBACK_ADDR are each instance's own, set below.
	env, err := r.env(0, 0)
	if err != nil {
		return err
	}
	if err := r.addClusterProcs(env, nodes, confs, apiAddrs, cbAddrs); err != nil {
		return err
	}
	r.reported = slices.Clone(r.order)
	return r.startCluster(ctx)
}

// configureNATS writes the configuration of the three nats-servers, with
// fresh credentials and ports, and sets r.natsURL.
func (r *runner) configureNATS() ([]binaries.NATSNode, []string, error) {
	secret := func() string {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	auth := binaries.NATSAuth{User: "stkgate", Password: secret(), RouteUser: "route", RoutePassword: secret()}
	var nodes []binaries.NATSNode
	for i := 1; i <= clusterNodes; i++ {
		port, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		cport, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		nodes = append(nodes, binaries.NATSNode{Name: instanceName("nats", i), Port: port, ClusterPort: cport,
			StoreDir: filepath.Join(r.work, "nats", instanceName("nats", i))})
	}
	confs, err := binaries.WriteNATSConfigs(r.work, "stkgate-cluster", nodes, auth)
	if err != nil {
		return nil, nil, err
	}
	r.natsURL = binaries.NATSURL(nodes, auth)
	return nodes, confs, nil
}

// balance picks the address of each api and callback-ingest instance and
// puts a balancer before each service's (r.apiURL, r.cbBase).
func (r *runner) balance() (apiAddrs, cbAddrs []string, err error) {
	for range r.o.Instances {
		for _, addrs := range []*[]string{&apiAddrs, &cbAddrs} {
			port, err := freePort()
			if err != nil {
				return nil, nil, err
			}
			*addrs = append(*addrs, fmt.Sprintf("127.0.0.1:%d", port))
		}
	}
	for _, b := range []struct {
		addrs []string
		url   *string
	}{{apiAddrs, &r.apiURL}, {cbAddrs, &r.cbBase}} {
		lb, err := binaries.Balance(b.addrs...)
		if err != nil {
			return nil, nil, err
		}
		r.closers = append(r.closers, func() { _ = lb.Close() })
		*b.url = lb.URL()
	}
	return apiAddrs, cbAddrs, nil
}

// addClusterProcs adds the nats-servers and Options.Instances instances of
// each service, each with its own address, to the processes to start.
func (r *runner) addClusterProcs(env []string, nodes []binaries.NATSNode, confs, apiAddrs, cbAddrs []string) error {
	for i, n := range nodes {
		if err := r.addProc(r.o.Bin, env, n.Name, "nats-server", []string{"-c", confs[i]},
			binaries.TCPReady(fmt.Sprintf("127.0.0.1:%d", n.Port))); err != nil {
			return err
		}
		r.natsNodes = append(r.natsNodes, n.Name)
	}
	for _, svc := range clusterServices {
		for i := 1; i <= r.o.Instances; i++ {
			name := instanceName(svc, i)
			var ready func(context.Context) error
			var extra []string
			switch svc {
			case "api":
				ready = binaries.HTTPReady("http://" + apiAddrs[i-1] + "/readyz")
				extra = append(extra, "API_ADDR="+apiAddrs[i-1])
			case "callback-ingest":
				ready = binaries.HTTPReady("http://" + cbAddrs[i-1] + "/readyz")
				extra = append(extra, "CALLBACK_ADDR="+cbAddrs[i-1])
			case "dispatcher":
				r.dispatchers = append(r.dispatchers, name)
			}
			if err := r.addProc(r.o.Bin, env, name, svc, nil, ready, extra...); err != nil {
				return err
			}
		}
	}
	return nil
}

// startCluster starts what addClusterProcs added, checks that the STK
// stream has its replicas, and opens r.db.
func (r *runner) startCluster(ctx context.Context) error {
	// The nodes start together (each waits for its routes), then the
	// services once the cluster has a JetStream meta leader.
	for _, n := range r.natsNodes {
		if err := r.procs[n].start(); err != nil {
			return err
		}
	}
	for _, n := range r.natsNodes {
		if err := r.procs[n].waitReady(ctx); err != nil {
			return err
		}
	}
	nc, err := r.natsConn()
	if err != nil {
		return err
	}
	r.nc = nc
	if err := waitFor(ctx, time.Minute, func() error { return binaries.JetStreamReady(ctx, nc) }); err != nil {
		return fmt.Errorf("the cluster has no JetStream meta leader: %w", err)
	}
	for _, name := range r.order[clusterNodes:] {
		if err := r.startReady(ctx, name); err != nil {
			return err
		}
	}
	c, err := binaries.StreamCluster(ctx, nc, events.StreamName)
	if err != nil {
		return err
	}
	if len(c.Replicas)+1 != clusterNodes {
		return fmt.Errorf("stream %s has %d replicas beside its leader, want %d: NATS_STREAM_REPLICAS not applied", events.StreamName, len(c.Replicas), clusterNodes-1)
	}
	r.logf("cluster up: %d nats-servers (%s leads %s), %d instances of each of %v; api %s, callbacks %s, logs in %s",
		clusterNodes, c.Leader, events.StreamName, r.o.Instances, clusterServices, r.apiURL, r.cbBase, r.logs)
	r.db, err = sql.Open("postgres", r.pg.URL("postgres"))
	return err
}

// natsConn connects the runner to the cluster (any node).
func (r *runner) natsConn() (*nats.Conn, error) {
	return nats.Connect(r.natsURL, nats.Name("stkgate-cluster-test"), nats.Timeout(2*time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond))
}

// waitFor calls try until it succeeds or limit has passed.
func waitFor(ctx context.Context, limit time.Duration, try func() error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		if last = try(); last == nil {
			return nil
		}
		sleep(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return fmt.Errorf("%w (after %s)", last, limit)
		}
	}
}
