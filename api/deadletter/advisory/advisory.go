// Package advisory reads the JetStream advisories the dead-letter watcher
// turns into dead letters (package deadletter).
//
// It is the watcher's parser, in a package of its own so that its fuzz
// target (FuzzParseAdvisory) builds without the embedded nats-server that
// deadletter's tests link. deadletter's TestParseAdvisory still checks it
// against nats-server's own advisory types.
package advisory

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/stkgate/stkgate/events"
)

// Advisory is what both advisories carry (the terminated one adds Reason):
// nats-server's JSConsumerDeliveryExceededAdvisory and
// JSConsumerDeliveryTerminatedAdvisory.
type Advisory struct {
	Type       string    `json:"type"`
	ID         string    `json:"id"`
	Time       time.Time `json:"timestamp"`
	Stream     string    `json:"stream"`
	Consumer   string    `json:"consumer"`
	StreamSeq  uint64    `json:"stream_seq"`
	Deliveries uint64    `json:"deliveries"`
	Reason     string    `json:"reason,omitempty"`
}

// Advisory types, as nats-server writes them.
const (
	TypeMaxDeliveries = "io.nats.jetstream.advisory.v1.max_deliver"
	TypeTerminated    = "io.nats.jetstream.advisory.v1.terminated"
)

// Parse reads an advisory and tells which kind it is by its subject
// and type, which must agree.
func Parse(subject string, body []byte) (Advisory, string, error) {
	var a Advisory
	if err := json.Unmarshal(body, &a); err != nil {
		return a, "", fmt.Errorf("advisory not JSON: %w", err)
	}
	var kind string
	switch {
	case strings.HasPrefix(subject, events.AdvisoryMaxDeliveriesPrefix+".") && a.Type == TypeMaxDeliveries:
		kind = events.DeadLetterMaxDeliveries
	case strings.HasPrefix(subject, events.AdvisoryTerminatedPrefix+".") && a.Type == TypeTerminated:
		kind = events.DeadLetterTerminated
	default:
		return a, "", fmt.Errorf("advisory of type %q on %s", a.Type, subject)
	}
	if a.Stream != events.StreamName || a.StreamSeq == 0 || !ValidToken(a.Consumer) {
		return a, "", fmt.Errorf("advisory for stream %q, consumer %q, sequence %d", a.Stream, a.Consumer, a.StreamSeq)
	}
	return a, kind, nil
}

// ValidToken reports whether s, a consumer name, makes one subject token.
func ValidToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}
