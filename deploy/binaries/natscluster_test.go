package binaries

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The configuration of a cluster's node is nats.conf's on loopback: the
// other nodes as authenticated routes, its own store. A typo here and the
// servers would start as three single nodes, which the cluster test would
// then measure as a cluster.
func TestNATSConfig(t *testing.T) {
	nodes := []NATSNode{
		{Name: "n1", Port: 21001, ClusterPort: 21011, StoreDir: "/tmp/c/n1"},
		{Name: "n2", Port: 21002, ClusterPort: 21012, StoreDir: "/tmp/c/n2"},
		{Name: "n3", Port: 21003, ClusterPort: 21013, StoreDir: "/tmp/c/n3"},
	}
	auth := NATSAuth{User: "stkgate", Password: "pw", RouteUser: "route", RoutePassword: "rpw"}
	got := NATSConfig("stkgate", nodes[1], nodes, auth)
	path := filepath.Join("testdata", "n2.conf")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update if the change is meant)\n got:\n%s\nwant:\n%s", path, got, want)
	}
	if url, want := NATSURL(nodes[:2], auth), "nats://stkgate:pw@127.0.0.1:21001,nats://stkgate:pw@127.0.0.1:21002"; url != want {
		t.Errorf("NATSURL = %q, want %q", url, want)
	}
}
