package binaries

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSNode is one node of a JetStream cluster on loopback, configured as
// deploy/container/nats.conf configures a container's: JetStream with a
// store of its own, clients authenticated, routes authenticated too.
type NATSNode struct {
	Name        string // server_name, which stream info names as a leader
	Port        int    // clients
	ClusterPort int    // routes
	StoreDir    string
}

// NATSAuth is the cluster's credentials: the services' user, and the
// routes' (a process that knows only the first cannot join the cluster).
type NATSAuth struct {
	User, Password           string
	RouteUser, RoutePassword string
}

// NATSConfig is node's configuration file in a cluster of nodes named
// cluster. Passwords are written into the file, which WriteNATSConfigs
// makes readable by its owner only: not on the command line, where ps
// shows them.
func NATSConfig(cluster string, node NATSNode, nodes []NATSNode, auth NATSAuth) string {
	var routes []string
	for _, n := range nodes {
		if n.Name != node.Name {
			routes = append(routes, fmt.Sprintf("nats-route://%s:%s@127.0.0.1:%d", auth.RouteUser, auth.RoutePassword, n.ClusterPort))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %q\nlisten: \"127.0.0.1:%d\"\n\n", node.Name, node.Port)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n}\n\n", node.StoreDir)
	fmt.Fprintf(&b, "authorization {\n  user: %q\n  password: %q\n}\n\n", auth.User, auth.Password)
	fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: \"127.0.0.1:%d\"\n", cluster, node.ClusterPort)
	fmt.Fprintf(&b, "  authorization {\n    user: %q\n    password: %q\n  }\n", auth.RouteUser, auth.RoutePassword)
	fmt.Fprintf(&b, "  routes: [\n")
	for _, r := range routes {
		fmt.Fprintf(&b, "    %q\n", r)
	}
	fmt.Fprintf(&b, "  ]\n}\n")
	return b.String()
}

// WriteNATSConfigs writes each node's configuration into dir (mode 0600)
// and returns the files, in the order of nodes.
func WriteNATSConfigs(dir, cluster string, nodes []NATSNode, auth NATSAuth) ([]string, error) {
	var files []string
	for _, n := range nodes {
		f := filepath.Join(dir, n.Name+".conf")
		if err := os.WriteFile(f, []byte(NATSConfig(cluster, n, nodes, auth)), 0o600); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// NATSURL is the services' NATS_URL for nodes: every node, comma-separated,
// with the user's credentials.
func NATSURL(nodes []NATSNode, auth NATSAuth) string {
	var urls []string
	for _, n := range nodes {
		urls = append(urls, fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", auth.User, auth.Password, n.Port))
	}
	return strings.Join(urls, ",")
}

// jsAPI sends one JetStream API request and decodes its answer, an error
// of the API's being returned as one.
func jsAPI(ctx context.Context, nc *nats.Conn, subject string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	var apiErr struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &apiErr); err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	if apiErr.Error != nil {
		return fmt.Errorf("%s: %d %s", subject, apiErr.Error.Code, apiErr.Error.Description)
	}
	if v != nil {
		if err := json.Unmarshal(msg.Data, v); err != nil {
			return fmt.Errorf("%s: %w", subject, err)
		}
	}
	return nil
}

// ClusterInfo is a stream's or consumer's placement: its leader's
// server_name and its replicas, current or not.
type ClusterInfo struct {
	Leader   string `json:"leader"`
	Replicas []struct {
		Name    string `json:"name"`
		Current bool   `json:"current"`
		Offline bool   `json:"offline"`
	} `json:"replicas"`
}

// StreamCluster is stream's placement, as $JS.API.STREAM.INFO says.
func StreamCluster(ctx context.Context, nc *nats.Conn, stream string) (ClusterInfo, error) {
	var info struct {
		Cluster ClusterInfo `json:"cluster"`
	}
	err := jsAPI(ctx, nc, "$JS.API.STREAM.INFO."+stream, &info)
	return info.Cluster, err
}

// ConsumerCluster is a consumer's placement, as $JS.API.CONSUMER.INFO says.
func ConsumerCluster(ctx context.Context, nc *nats.Conn, stream, consumer string) (ClusterInfo, error) {
	var info struct {
		Cluster ClusterInfo `json:"cluster"`
	}
	err := jsAPI(ctx, nc, "$JS.API.CONSUMER.INFO."+stream+"."+consumer, &info)
	return info.Cluster, err
}

// StepDown asks stream's leader, or with consumer that consumer's, to give
// up its leadership: another replica is elected.
func StepDown(ctx context.Context, nc *nats.Conn, stream, consumer string) error {
	subject := "$JS.API.STREAM.LEADER.STEPDOWN." + stream
	if consumer != "" {
		subject = "$JS.API.CONSUMER.LEADER.STEPDOWN." + stream + "." + consumer
	}
	return jsAPI(ctx, nc, subject, nil)
}

// JetStreamReady says whether the cluster behind nc has a JetStream meta
// leader: $JS.API.INFO answers without an error.
func JetStreamReady(ctx context.Context, nc *nats.Conn) error {
	return jsAPI(ctx, nc, "$JS.API.INFO", nil)
}
