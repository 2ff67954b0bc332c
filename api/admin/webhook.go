package admin

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/webhook"
)

// The webhook commands (docs/WEBHOOKS.md). A signing secret is printed
// once, to stdout, at add and rotate-secret; it is stored sealed with
// WEBHOOK_SECRET_KEY (docs/SECURITY.md), which the webhooks worker holds too.
const webhookUsage = `  webhook add CLIENT URL [-events E,E] [-env-client]
                                add an endpoint; prints its signing secret. E:
                                completed (default), requested, dispatched,
                                late_result. -env-client: CLIENT is an
                                API_TOKENS client, not in the database
  webhook list [CLIENT]         list the endpoints
  webhook remove ID             deliver nothing more to the endpoint
  webhook rotate-secret ID [-grace D]
                                print a new secret; the old one signs too
                                for the grace D (default 24h; 0: stops now)
  webhook disable ID            stop delivering (kept; enable resumes)
  webhook enable ID             deliver again (after a 410 disabled it)
  webhook deliveries CLIENT TRACKING_ID
                                the payment's deliveries and their attempts
  webhook reseal                seal every stored secret anew under the first
                                key of WEBHOOK_SECRET_KEY (after a change of
                                key: new,old), the secrets unchanged
  webhook redeliver DELIVERY    one more attempt of the delivery now, whatever
                                its state (NATS_URL: where the worker runs)
  (webhook URLs: https only, never a private, loopback, link-local or
  metadata address; WEBHOOK_DEV_MODE=true also allows http:// and loopback)`

// webhookVerb is verb when it is a webhook command, else a string no verb
// is (so that it matches no case).
func webhookVerb(verb string) string {
	switch verb {
	case "webhook add", "webhook list", "webhook remove", "webhook rotate-secret",
		"webhook disable", "webhook enable", "webhook deliveries", "webhook redeliver",
		"webhook reseal":
		return verb
	}
	return "\x00"
}

// Environment of the webhook commands.
const (
	EnvWebhookSecretKey = "WEBHOOK_SECRET_KEY"
	EnvWebhookDevMode   = "WEBHOOK_DEV_MODE"
)

// lookup resolves endpoint hosts at registration; tests replace it.
var lookup webhook.Lookup = webhook.SystemLookup

// shortEvents maps -events names to event types.
var shortEvents = map[string]string{
	"completed":   "stk.completed",
	"requested":   "stk.requested",
	"dispatched":  "stk.dispatched",
	"late_result": "stk.late_result",
}

func (c *cmd) webhook(ctx context.Context, verb string, args []string) error {
	switch verb {
	case "add":
		return c.webhookAdd(ctx, args)
	case "list":
		return c.webhookList(ctx, args)
	case "remove":
		return c.webhookChange(ctx, "remove", args, c.s.RemoveWebhookEndpoint, "removed: nothing more is delivered to it")
	case "rotate-secret":
		return c.webhookRotate(ctx, args)
	case "disable":
		return c.webhookChange(ctx, "disable", args, func(ctx context.Context, id string) error {
			return c.s.DisableWebhookEndpoint(ctx, id, "disabled by an operator")
		}, "disabled: its pending deliveries are cancelled at their next try")
	case "enable":
		return c.webhookChange(ctx, "enable", args, c.s.EnableWebhookEndpoint, "enabled: new events are delivered to it")
	case "deliveries":
		return c.webhookDeliveries(ctx, args)
	case "redeliver":
		return c.webhookRedeliver(ctx, args)
	case "reseal":
		return c.webhookReseal(ctx, args)
	}
	return usageErrorf("unknown command webhook %s", verb)
}

func (c *cmd) policy() webhook.Policy {
	return webhook.Policy{Dev: strings.TrimSpace(c.getenv(EnvWebhookDevMode)) == "true"}
}

// sealer reads WEBHOOK_SECRET_KEY.
func (c *cmd) sealer() (*webhook.Sealer, error) {
	k := c.getenv(EnvWebhookSecretKey)
	if strings.TrimSpace(k) == "" {
		return nil, fmt.Errorf("%s: required to seal webhook secrets (the webhooks worker's key; openssl rand -base64 32)", EnvWebhookSecretKey)
	}
	s, err := webhook.NewSealer(k)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvWebhookSecretKey, err)
	}
	return s, nil
}

// newSealedSecret makes a secret for endpoint id and seals it.
func (c *cmd) newSealedSecret(id string) (webhook.Secret, []byte, error) {
	sealer, err := c.sealer()
	if err != nil {
		return webhook.Secret{}, nil, err
	}
	sec, err := webhook.NewSecret()
	if err != nil {
		return webhook.Secret{}, nil, err
	}
	sealed, err := sealer.Seal(id, sec)
	return sec, sealed, err
}

func (c *cmd) webhookAdd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("webhook add", flag.ContinueOnError)
	evs := fs.String("events", "completed", "the events to deliver, comma-separated")
	envClient := fs.Bool("env-client", false, "CLIENT is an API_TOKENS client")
	pos, err := parse(fs, args, 2, "CLIENT URL")
	if err != nil {
		return err
	}
	client, rawURL := pos[0], pos[1]
	if err := checkName(client); err != nil {
		return err
	}
	types, err := eventTypes(*evs)
	if err != nil {
		return err
	}
	if !*envClient {
		found, err := c.s.ClientsNamed(ctx, []string{client})
		if err != nil {
			return err
		}
		if len(found) == 0 {
			return fmt.Errorf("no client %s in the database (an API_TOKENS client: add -env-client)", client)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u, err := c.policy().Resolve(rctx, lookup, rawURL)
	if err != nil {
		return fmt.Errorf("webhook URL refused: %w", err)
	}
	id := uuid.NewString()
	sec, sealed, err := c.newSealedSecret(id)
	if err != nil {
		return err
	}
	err = c.s.AddWebhookEndpoint(ctx, store.WebhookEndpoint{ID: id, Client: client, URL: u.String(), Events: types, Secret: sealed})
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, sec.String())
	fmt.Fprintf(c.stderr, "endpoint %s added for client %s (%s); keep its signing secret now: it is not shown again\n",
		id, client, strings.Join(types, ","))
	return nil
}

// eventTypes reads -events.
func eventTypes(list string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimPrefix(strings.TrimSpace(e), "stk.")
		t, ok := shortEvents[e]
		if !ok {
			return nil, usageErrorf("-events: %q is not one of completed, requested, dispatched, late_result", e)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out, nil
}

// endpointID parses the one argument ID.
func endpointID(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parse(fs, args, 1, "ID")
	if err != nil {
		return "", err
	}
	if _, err := uuid.Parse(pos[0]); err != nil {
		return "", usageErrorf("ID is not an endpoint id (webhook list shows them)")
	}
	return pos[0], nil
}

func (c *cmd) webhookChange(ctx context.Context, verb string, args []string, f func(context.Context, string) error, done string) error {
	id, err := endpointID(flag.NewFlagSet("webhook "+verb, flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	if err := f(ctx, id); err != nil {
		return noEndpoint(id, err)
	}
	fmt.Fprintf(c.stderr, "endpoint %s %s\n", id, done)
	return nil
}

func noEndpoint(id string, err error) error {
	if errors.Is(err, store.ErrWebhookEndpointNotFound) {
		return fmt.Errorf("no endpoint %s", id)
	}
	return err
}

func (c *cmd) webhookRotate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("webhook rotate-secret", flag.ContinueOnError)
	grace := fs.Duration("grace", DefaultGrace, "how long the old secret keeps signing")
	id, err := endpointID(fs, args)
	if err != nil {
		return err
	}
	if *grace < 0 || *grace > maxGrace {
		return usageErrorf("-grace %s is not from 0 to %s", *grace, maxGrace)
	}
	if _, err := c.s.WebhookEndpoint(ctx, id); err != nil {
		return noEndpoint(id, err)
	}
	sec, sealed, err := c.newSealedSecret(id)
	if err != nil {
		return err
	}
	if err := c.s.RotateWebhookSecret(ctx, id, sealed, *grace); err != nil {
		return noEndpoint(id, err)
	}
	fmt.Fprintln(c.stdout, sec.String())
	fmt.Fprintf(c.stderr, "endpoint %s: new signing secret; keep it now: it is not shown again. Deliveries carry both signatures for %s\n", id, *grace)
	return nil
}

func (c *cmd) webhookList(ctx context.Context, args []string) error {
	pos, err := positional(flag.NewFlagSet("webhook list", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	var client string
	switch len(pos) {
	case 0:
	case 1:
		if client = pos[0]; checkName(client) != nil {
			return checkName(client)
		}
	default:
		return usageErrorf("webhook list takes at most CLIENT")
	}
	eps, err := c.s.WebhookEndpoints(ctx, client)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tCLIENT\tURL\tEVENTS\tSTATE\tCREATED")
	now := time.Now()
	for _, e := range eps {
		state := "enabled"
		if !e.DisabledAt.IsZero() {
			state = "disabled since " + stamp(e.DisabledAt) + " (" + e.DisabledReason + ")"
		}
		if len(e.Signing(now)) > 1 {
			state += ", old secret signs until " + stamp(e.PreviousExpiresAt)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.Client, e.URL, strings.Join(e.Events, ","), state, stamp(e.CreatedAt))
	}
	return w.Flush()
}

func (c *cmd) webhookDeliveries(ctx context.Context, args []string) error {
	pos, err := parse(flag.NewFlagSet("webhook deliveries", flag.ContinueOnError), args, 2, "CLIENT TRACKING_ID")
	if err != nil {
		return err
	}
	if err := checkName(pos[0]); err != nil {
		return err
	}
	ds, err := c.s.WebhookDeliveries(ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DELIVERY\tEVENT\tENDPOINT\tSTATE\tATTEMPT\tAT\tSTATUS\tLATENCY\tERROR")
	for _, d := range ds {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t\t\t\t\n", d.ID, d.EventID, d.EndpointID, d.State, d.Attempts)
		for i, a := range d.AttemptLog {
			status := "-"
			if a.StatusCode != 0 {
				status = fmt.Sprint(a.StatusCode)
			}
			fmt.Fprintf(w, "\t\t\t\t%d\t%s\t%s\t%s\t%s\n", d.Attempts-len(d.AttemptLog)+i+1, stamp(a.At), status, a.Latency, oneLine(a.Error))
		}
	}
	return w.Flush()
}

// webhookRedeliver asks the worker for one more attempt of a delivery: a
// task marked manual, with a Nats-Msg-Id of its own so that it is not
// dropped as the first task's duplicate. The body is the event as the STK
// stream keeps it.
func (c *cmd) webhookRedeliver(ctx context.Context, args []string) error {
	pos, err := parse(flag.NewFlagSet("webhook redeliver", flag.ContinueOnError), args, 1, "DELIVERY")
	if err != nil {
		return err
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id < 1 {
		return usageErrorf("DELIVERY is a delivery's number (webhook deliveries shows them)")
	}
	d, err := c.s.WebhookDeliveryByID(ctx, id)
	if errors.Is(err, store.ErrWebhookDeliveryNotFound) {
		return fmt.Errorf("no delivery %d", id)
	}
	if err != nil {
		return err
	}
	ep, err := c.s.WebhookEndpoint(ctx, d.EndpointID)
	if err != nil {
		return noEndpoint(d.EndpointID, err)
	}
	if !ep.DisabledAt.IsZero() {
		return fmt.Errorf("endpoint %s is disabled (%s): webhook enable %s first", ep.ID, ep.DisabledReason, ep.ID)
	}
	js := c.js
	if js == nil {
		return errors.New("webhook redeliver needs NATS (NATS_URL: the NATS the webhooks worker uses)")
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := js.Stream(tctx, events.StreamName)
	if err != nil {
		return fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	msg, err := events.LastMsg(tctx, js, stream, events.Subject(d.EventType, d.TrackingID))
	if err != nil {
		return fmt.Errorf("the event of delivery %d is no longer in %s: %w", id, events.StreamName, err)
	}
	if env, _, err := events.Decode(msg.Data); err != nil || env.ID != d.EventID {
		return fmt.Errorf("the event of delivery %d is no longer in %s (its subject holds another)", id, events.StreamName)
	}
	body, err := json.Marshal(webhook.Task{DeliveryID: d.ID, EndpointID: ep.ID, Event: msg.Data, Manual: true})
	if err != nil {
		return err
	}
	msgID := webhook.TaskMsgID(d.EventID, ep.ID) + ":manual:" + strconv.FormatInt(time.Now().UnixNano(), 10)
	if _, err := js.Publish(tctx, webhook.TaskSubject(ep.ID), body, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(webhook.TaskStreamName)); err != nil {
		return fmt.Errorf("queue the redelivery: %w", err)
	}
	fmt.Fprintf(c.stderr, "delivery %d (%s to %s) queued for one more attempt; webhook deliveries %s %s shows it\n",
		d.ID, d.EventID, ep.URL, d.Client, d.TrackingID)
	return nil
}

// webhookReseal seals every stored secret anew under the first key, so
// that the old key can be dropped from WEBHOOK_SECRET_KEY: the merchants'
// secrets do not change. A previous secret whose grace is over is cleared
// rather than resealed. Run again, it reseals nothing; an endpoint rotated
// meanwhile is left as the rotation made it (sealed with the first key).
func (c *cmd) webhookReseal(ctx context.Context, args []string) error {
	if _, err := parse(flag.NewFlagSet("webhook reseal", flag.ContinueOnError), args, 0, ""); err != nil {
		return err
	}
	sealer, err := c.sealer()
	if err != nil {
		return err
	}
	eps, err := c.s.AllWebhookEndpoints(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	resealed, failed := 0, 0
	for _, ep := range eps {
		prev := ep.PreviousSecret
		if prev != nil && !now.Before(ep.PreviousExpiresAt) {
			prev = nil
		}
		if sealer.SealedWithFirst(ep.Secret) && (prev == nil || sealer.SealedWithFirst(prev)) && len(prev) == len(ep.PreviousSecret) {
			continue
		}
		secret, err := c.reseal(sealer, ep.ID, ep.Secret)
		if err == nil && prev != nil {
			prev, err = c.reseal(sealer, ep.ID, prev)
		}
		if err == nil {
			err = c.s.ResealWebhookSecrets(ctx, ep, secret, prev)
			if errors.Is(err, store.ErrWebhookEndpointNotFound) {
				continue // rotated meanwhile: sealed with the first key
			}
		}
		if err != nil {
			failed++
			fmt.Fprintf(c.stderr, "endpoint %s: not resealed: %v\n", ep.ID, err)
			continue
		}
		resealed++
	}
	fmt.Fprintf(c.stderr, "%d endpoint(s) resealed under the first key of %s\n", resealed, EnvWebhookSecretKey)
	if failed > 0 {
		return fmt.Errorf("%d endpoint(s) not resealed: keep their key in %s, or rotate their secrets", failed, EnvWebhookSecretKey)
	}
	return nil
}

// reseal opens sealed with any key and seals it with the first.
func (c *cmd) reseal(sealer *webhook.Sealer, id string, sealed []byte) ([]byte, error) {
	if sealer.SealedWithFirst(sealed) {
		return sealed, nil
	}
	sec, err := sealer.Open(id, sealed)
	if err != nil {
		return nil, err
	}
	return sealer.Seal(id, sec)
}

// allowCallbackURL is client allow-callback-url NAME on|off. The first
// "on" makes the client's callback_url endpoint: its signing secret, one
// for all of the client's per-request URLs, is printed once, like an
// endpoint's. A secret of the client's own, not one of its endpoints':
// an endpoint's secret belongs to that receiver, and the receiver of a
// callback_url may be another system; rotated with webhook rotate-secret
// ID like any (webhook list shows the ID).
func (c *cmd) allowCallbackURL(ctx context.Context, args []string) error {
	pos, err := parse(flag.NewFlagSet("client allow-callback-url", flag.ContinueOnError), args, 2, "NAME on|off")
	if err != nil {
		return err
	}
	n := pos[0]
	if err := checkName(n); err != nil {
		return err
	}
	var on bool
	switch pos[1] {
	case "on":
		on = true
	case "off":
	default:
		return usageErrorf("client allow-callback-url takes on or off")
	}
	ep := store.WebhookEndpoint{ID: uuid.NewString()}
	var sec webhook.Secret
	if on {
		if sec, ep.Secret, err = c.newSealedSecret(ep.ID); err != nil {
			return err
		}
	}
	got, created, err := c.s.SetCallbackURLAllowed(ctx, n, on, ep)
	if err != nil {
		return named(n, err)
	}
	switch {
	case created:
		fmt.Fprintln(c.stdout, sec.String())
		fmt.Fprintf(c.stderr, "client %s may give a callback_url: its deliveries are signed with this secret (endpoint %s); keep it now: it is not shown again\n", n, got.ID)
	case on:
		fmt.Fprintf(c.stderr, "client %s may give a callback_url (already had its secret: endpoint %s; webhook rotate-secret changes it)\n", n, got.ID)
	default:
		fmt.Fprintf(c.stderr, "client %s: a callback_url is refused from now on (payments accepted with one are still told)\n", n)
	}
	return nil
}
