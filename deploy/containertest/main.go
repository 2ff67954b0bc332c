// Command containertest is `make container-test`: it builds every image
// with no registry (scripts/images), brings deploy/container/compose.yaml
// up with compose.smoke.yaml (Daraja the simulator, Postgres this host's
// through a relay), and passes one payment through it: POST, then GET
// until its outcome is final, from each api replica; and checks that the
// STK stream has its three replicas. Where no container
// engine answers it says so and exits 0: it is not part of `make test`.
//
//	cd deploy && go run ./containertest [-keep] [-no-build]
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "github.com/lib/pq"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/dispatcher/daraja/darajatest"
	"github.com/stkgate/stkgate/events"
)

// The host's Postgres (trust auth), where the smoke test makes a database
// of its own.
const hostPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func main() {
	keep := flag.Bool("keep", false, "leave the stack up (and its database) after the test")
	noBuild := flag.Bool("no-build", false, "use the images already built")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("container-test: ")

	docker, compose, why := engine()
	if docker == "" {
		log.Printf("SKIPPED: %s", why)
		return
	}
	if err := run(docker, compose, *keep, *noBuild); err != nil {
		log.Printf("FAIL: %v", err)
		os.Exit(1)
	}
	log.Print("PASS")
}

// engine finds a docker client whose engine answers and a compose: "" and
// why not when there is none.
func engine() (docker string, compose []string, why string) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		return "", nil, "no docker client on PATH"
	}
	if out, err := exec.Command(docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return "", nil, fmt.Sprintf("no container engine answers (docker info: %s)", firstLine(out))
	}
	if exec.Command(docker, "compose", "version").Run() == nil {
		return docker, []string{docker, "compose"}, ""
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return docker, []string{p}, ""
	}
	return "", nil, "no docker compose (neither the plugin nor docker-compose)"
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// run builds the images, brings the stack up on a fresh database of this
// host's Postgres, and passes one payment through it.
//
// Long because it is a script of one pass, top to bottom, whose every
// cleanup (the database, the relay, the env file, the compose project) is
// deferred where what it undoes is made, and kept with -keep: cut into
// steps, each would hand its cleanup back to be deferred here.
func run(docker string, composeCmd []string, keep, noBuild bool) error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	if !noBuild {
		log.Print("building the images (scripts/images)")
		cmd := exec.Command(filepath.Join(root, "scripts/images"))
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("make images: %w", err)
		}
	}

	// Postgres: a fresh database on this host's, reached from the
	// containers through a relay on the bridge's gateway.
	db, err := sql.Open("postgres", hostPostgres)
	if err != nil {
		return err
	}
	defer db.Close()
	dbName := "stkgate_smoke_" + randomHex(6)
	if _, err := db.Exec("CREATE DATABASE " + dbName); err != nil {
		return fmt.Errorf("the host's Postgres (%s): %w", hostPostgres, err)
	}
	if !keep {
		defer func() {
			if _, err := db.Exec("DROP DATABASE IF EXISTS " + dbName + " WITH (FORCE)"); err != nil {
				log.Printf("drop database %s: %v", dbName, err)
			}
		}()
	}
	gateway, err := output(docker, "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}")
	if err != nil {
		return fmt.Errorf("the bridge's gateway: %w", err)
	}
	relay, err := startRelay(net.JoinHostPort(gateway, "0"), "127.0.0.1:5432")
	if err != nil {
		return fmt.Errorf("relay to Postgres: %w", err)
	}
	defer relay.Close()
	_, relayPort, _ := net.SplitHostPort(relay.Addr().String())

	apiPorts, err := freePorts(2)
	if err != nil {
		return err
	}
	cbPorts, err := freePorts(2)
	if err != nil {
		return err
	}
	token := randomHex(32)
	env := map[string]string{
		"POSTGRES_PASSWORD":      "unused-the-host-postgres-trusts",
		"NATS_PASSWORD":          randomHex(32),
		"NATS_CLUSTER_PASSWORD":  randomHex(32),
		"DARAJA_CONSUMER_KEY":    darajatest.DefaultConsumerKey,
		"DARAJA_CONSUMER_SECRET": darajatest.DefaultConsumerSecret,
		"CALLBACK_BASE_URL":      "http://callback-ingest:8081",
		"CALLBACK_SECRET":        base64.StdEncoding.EncodeToString(randomBytes(32)),
		"API_TOKENS":             "smoke:" + token,
		"API_HOST_PORTS":         fmt.Sprintf("%d-%d", apiPorts, apiPorts+1),
		"CALLBACK_HOST_PORTS":    fmt.Sprintf("%d-%d", cbPorts, cbPorts+1),
		"SMOKE_DATABASE_URL":     fmt.Sprintf("postgres://postgres@host.docker.internal:%s/%s?sslmode=disable", relayPort, dbName),
	}
	dir, err := os.MkdirTemp("", "stkgate-container-test")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	envFile := filepath.Join(dir, ".env")
	var b strings.Builder
	for k, v := range env {
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	if err := os.WriteFile(envFile, []byte(b.String()), 0o600); err != nil {
		return err
	}

	project := "stkgate-smoke-" + randomHex(3)
	c := composeRunner{cmd: composeCmd, args: []string{
		"-p", project, "--env-file", envFile,
		"-f", filepath.Join(root, "deploy/container/compose.yaml"),
		"-f", filepath.Join(root, "deploy/container/compose.smoke.yaml"),
	}}
	if !keep {
		defer func() {
			if err := c.run("down", "-v", "--remove-orphans"); err != nil {
				log.Printf("compose down: %v", err)
			}
		}()
	} else {
		log.Printf("-keep: project %s, env file kept at %s", project, envFile)
		defer func() { _ = os.Rename(envFile, envFile+".kept") }()
	}

	// NATS and the simulator first, then the services: no Postgres
	// container to wait for (--no-deps), the host's is up.
	log.Print("starting NATS and the Daraja simulator")
	if err := c.run("up", "-d", "nats-1", "nats-2", "nats-3", "daraja-sim"); err != nil {
		return err
	}
	if err := waitHealthy(docker, c, 2*time.Minute, "nats-1", "nats-2", "nats-3"); err != nil {
		c.logs()
		return err
	}
	log.Print("starting the services")
	if err := c.run("up", "-d", "--no-deps", "api", "projector", "dispatcher", "callback-ingest"); err != nil {
		return err
	}
	if err := waitHealthy(docker, c, 4*time.Minute, "api", "projector", "dispatcher", "callback-ingest"); err != nil {
		c.logs()
		return err
	}

	if err := payment(fmt.Sprintf("http://127.0.0.1:%d", apiPorts), fmt.Sprintf("http://127.0.0.1:%d", apiPorts+1), token); err != nil {
		c.logs()
		return err
	}
	return streamReplicas(docker, c, env["NATS_PASSWORD"])
}

// streamReplicas checks, from this host through nats-1's address on the
// compose network, that the services made the STK stream with a replica on
// each of the three nodes, every one current.
func streamReplicas(docker string, c composeRunner, password string) error {
	out, err := c.command("ps", "-q", "nats-1").Output()
	if err != nil || len(strings.Fields(string(out))) != 1 {
		return fmt.Errorf("nats-1's container: %v", err)
	}
	ip, err := output(docker, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", strings.TrimSpace(string(out)))
	if err != nil {
		return fmt.Errorf("nats-1's address: %w", err)
	}
	nc, err := nats.Connect("nats://"+net.JoinHostPort(ip, "4222"), nats.UserInfo("stkgate", password), nats.Timeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("NATS at nats-1: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	info := st.CachedInfo()
	current := 0
	if info.Cluster != nil && info.Cluster.Leader != "" {
		current = 1
		for _, p := range info.Cluster.Replicas {
			if p.Current {
				current++
			}
		}
	}
	if info.Config.Replicas != 3 || current != 3 {
		return fmt.Errorf("stream %s: %d replicas configured, %d current; want 3 and 3", events.StreamName, info.Config.Replicas, current)
	}
	log.Printf("stream %s: 3 replicas, leader %s, all current", events.StreamName, info.Cluster.Leader)
	return nil
}

type composeRunner struct {
	cmd, args []string
}

func (c composeRunner) command(args ...string) *exec.Cmd {
	all := append(append(append([]string{}, c.cmd[1:]...), c.args...), args...)
	return exec.Command(c.cmd[0], all...)
}

func (c composeRunner) run(args ...string) error {
	cmd := c.command(args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("compose %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return nil
}

func (c composeRunner) logs() {
	cmd := c.command("logs", "--no-color", "--tail", "40")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	_ = cmd.Run()
}

// waitHealthy waits until every container of the services is healthy.
func waitHealthy(docker string, c composeRunner, limit time.Duration, services ...string) error {
	deadline := time.Now().Add(limit)
	for {
		var notYet []string
		for _, s := range services {
			out, err := c.command("ps", "-q", s).Output()
			ids := strings.Fields(string(out))
			if err != nil || len(ids) == 0 {
				notYet = append(notYet, s+": no container")
				continue
			}
			for _, id := range ids {
				state, err := output(docker, "inspect", "--format", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", id)
				if err != nil || state != "running healthy" {
					notYet = append(notYet, fmt.Sprintf("%s %.12s: %s", s, id, state))
				}
			}
		}
		if len(notYet) == 0 {
			log.Printf("healthy: %s", strings.Join(services, ", "))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy after %s: %s", limit, strings.Join(notYet, "; "))
		}
		time.Sleep(2 * time.Second) // polling the engine; not a test's sleep
	}
}

// payment posts one payment to the first api and follows it on both until
// its outcome is final: Success, with a receipt, the same on both.
func payment(api1, api2, token string) error {
	client := &http.Client{Timeout: 10 * time.Second}
	body := `{"phone":"0712345678","amount":10,"reference":"SMOKE-1","tag":"container-test"}`
	req, _ := http.NewRequest(http.MethodPost, api1+"/api/stk-push", strings.NewReader(body))
	req.Header.Set("X-API-Token", token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "smoke-"+randomHex(8))
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("POST /api/stk-push: %w", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var posted struct {
		Success    bool   `json:"success"`
		TrackingID string `json:"tracking_id"`
	}
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(b, &posted) != nil || posted.TrackingID == "" {
		return fmt.Errorf("POST /api/stk-push: %s %s", resp.Status, b)
	}
	log.Printf("POST /api/stk-push: %s tracking_id %s", resp.Status, posted.TrackingID)

	type record struct {
		Status          int    `json:"status"`
		StatusLabel     string `json:"status_label"`
		TransactionCode string `json:"transaction_code"`
	}
	get := func(api string) (record, string, error) {
		req, _ := http.NewRequest(http.MethodGet, api+"/api/stk-push/"+posted.TrackingID, nil)
		req.Header.Set("X-API-Token", token)
		resp, err := client.Do(req)
		if err != nil {
			return record{}, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var r struct {
			Data record `json:"data"`
			record
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &r) != nil {
			return record{}, string(b), fmt.Errorf("GET: %s %s", resp.Status, b)
		}
		if r.Data.StatusLabel != "" {
			return r.Data, string(b), nil
		}
		return r.record, string(b), nil
	}
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for {
		r, raw, err := get(api1)
		if err == nil && r.Status == 1 {
			if r.StatusLabel != "Success" || r.TransactionCode == "" {
				return fmt.Errorf("final, but not a success with a receipt: %s", raw)
			}
			log.Printf("GET /api/stk-push/%s: %s, receipt %s", posted.TrackingID, r.StatusLabel, r.TransactionCode)
			break
		}
		if err != nil {
			last = err.Error()
		} else {
			last = raw
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not final after 90s; last answer: %s", last)
		}
		time.Sleep(time.Second) // polling the stack; not a test's sleep
	}
	r2, raw, err := get(api2)
	if err != nil || r2.StatusLabel != "Success" {
		return fmt.Errorf("the second api replica: %v %s", err, raw)
	}
	log.Printf("the second api replica answers the same: %s, receipt %s", r2.StatusLabel, r2.TransactionCode)
	return nil
}

// startRelay forwards every connection to from's address to to.
func startRelay(from, to string) (net.Listener, error) {
	ln, err := net.Listen("tcp", from)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.DialTimeout("tcp", to, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); _, _ = io.Copy(out, in); _ = out.(*net.TCPConn).CloseWrite() }()
				go func() { defer wg.Done(); _, _ = io.Copy(in, out); _ = in.(*net.TCPConn).CloseWrite() }()
				wg.Wait()
			}()
		}
	}()
	return ln, nil
}

// freePorts finds n consecutive free ports on loopback and returns the first.
func freePorts(n int) (int, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		first := ln.Addr().(*net.TCPAddr).Port
		ok := true
		held := []net.Listener{ln}
		for i := 1; i < n; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", first+i))
			if err != nil {
				ok = false
				break
			}
			held = append(held, l)
		}
		for _, l := range held {
			l.Close()
		}
		if ok {
			return first, nil
		}
	}
	return 0, errors.New("no consecutive free ports")
}

func output(name string, args ...string) (string, error) {
	out, err := exec.CommandContext(context.Background(), name, args...).Output()
	return strings.TrimSpace(string(out)), err
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomHex(n int) string { return hex.EncodeToString(randomBytes(n)) }
