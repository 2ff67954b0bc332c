package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"
)

// TestCluster is make cluster-test's run as a test (issue 13): three
// nats-servers clustered on loopback, every stream and bucket 3 replicas,
// two instances of each service, and under a steady load the STK leader's
// node stopped and started, then the next leader's killed -9 and started,
// one instance of each service killed -9, the
// stream's and a consumer's leadership stepped down, and every instance
// SIGTERMed in turn. It asserts chaos's money guarantees, no 404 for an
// accepted id, every SIGTERM an exit 0 within the stop deadline, and after
// each fault 2xx answers and prompts for new requests again. Four minutes
// on two cores: not in make test (CI's deploy job takes 300 s already);
// STKGATE_CLUSTER=1 runs it, -short skips it.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster and two instances of every service")
	}
	if os.Getenv("STKGATE_CLUSTER") != "1" {
		t.Skip("STKGATE_CLUSTER=1 runs it (make cluster-test runs the same as a program)")
	}
	root, bin := builtBinaries(t)
	var out bytes.Buffer
	o := Options{
		Root: root, Bin: bin, N: 200, Clients: 6, Rate: 15, Settle: 3 * time.Minute,
		Seed: chaosSeed(t), SimDelay: 500 * time.Millisecond, Replays: 20,
		Faults: "quick", Latency: 300 * time.Millisecond,
		Cluster: true, Instances: 2, ClusterFaults: true,
		ExtraEnv: map[string]string{
			"DISPATCH_RETRY_MAX":         "10s",
			"RECONCILE_AFTER":            "3s",
			"RECONCILE_RECEIPT_WAIT":     "10s",
			"RECONCILE_PROMPT_LIFETIME":  "20s",
			"RECONCILE_REQUEST_DEADLINE": "35s",
			"RECONCILE_UNKNOWN_DEADLINE": "30s",
		},
		Out: &out,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("run (seed %d): %v\n%s", o.Seed, err, out.String())
	}
	rep.Print(&out)
	t.Log("\n" + out.String())
	for _, f := range rep.Failures {
		t.Errorf("seed %d: %s", o.Seed, f)
	}
	if rep.Cluster == nil || len(rep.Cluster.Faults) != 2+len(clusterServices)*(1+o.Instances)+2 {
		t.Fatalf("faults carried out: %+v", rep.Cluster)
	}
	for _, f := range rep.Cluster.Faults {
		if f.AcceptAfter < 0 || f.PushAfter < 0 {
			t.Errorf("%s: within %s, first 2xx after %s, first prompt after %s (negative: none): the cluster did not recover",
				f.What, recoveryWindow, f.AcceptAfter, f.PushAfter)
		}
	}
}
