package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/redact"
)

// Helpers of the commands that read streams (history, dlq): read the
// messages of some subjects, and show them without a phone number or a
// callback token.

// readSubjects calls fn with every message of stream on filters, oldest
// first, and returns whether the stream exists.
func readSubjects(ctx context.Context, js jetstream.JetStream, stream string, filters []string, fn func(jetstream.Msg) error) (bool, error) {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return true, fmt.Errorf("read %s: %w", stream, err)
	}
	left := info.NumPending
	for left > 0 {
		msgs, err := cons.Fetch(int(min(left, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return true, fmt.Errorf("read %s: %w", stream, err)
		}
		n := 0
		for m := range msgs.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return true, fmt.Errorf("read %s: %w", stream, err)
			}
			if err := fn(m); err != nil {
				return true, err
			}
			left = md.NumPending
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return true, fmt.Errorf("read %s: %w", stream, err)
		}
		if n == 0 {
			// What was pending aged out meanwhile.
			return true, nil
		}
	}
	return true, nil
}

// phoneKey is a JSON key that holds a phone number: phone, phone_number,
// PhoneNumber, MSISDN…
var phoneKey = regexp.MustCompile(`(?i)phone|msisdn`)

// maskJSON is body with every phone number masked (events.MaskPhone): the
// value of a key named like a phone, and the Value of a Daraja callback
// item named PhoneNumber. A body that is not JSON is not shown: it may hold
// anything; nil says so.
func maskJSON(body []byte) json.RawMessage {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil
	}
	out, err := json.Marshal(maskValue(v))
	if err != nil {
		return nil
	}
	return out
}

func maskValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if name, ok := x["Name"].(string); ok && phoneKey.MatchString(name) {
			if val, ok := x["Value"]; ok {
				x["Value"] = maskScalar(val)
			}
		}
		for k, val := range x {
			if phoneKey.MatchString(k) {
				x[k] = maskScalar(val)
				continue
			}
			x[k] = maskValue(val)
		}
	case []any:
		for i := range x {
			x[i] = maskValue(x[i])
		}
	}
	return v
}

func maskScalar(v any) any {
	switch x := v.(type) {
	case string:
		return events.MaskPhone(x)
	case json.Number:
		return events.MaskPhone(x.String())
	case nil:
		return nil
	}
	return redact.Mask
}

// redactPath is a callback's request path with its callback token hidden:
// "/hooks/stk-push/<id>/REDACTED". A path not under the callback path is
// hidden whole: a token may be anywhere in it.
func redactPath(p string) string {
	if p == "" {
		return ""
	}
	rest, ok := strings.CutPrefix(p, events.CallbackPath)
	if !ok {
		return redact.Mask
	}
	id, _, _ := strings.Cut(rest, "/")
	id, _, _ = strings.Cut(id, "?")
	if _, err := uuid.Parse(id); err != nil {
		return redact.Mask
	}
	if len(id) < len(rest) {
		return events.CallbackPath + id + "/" + redact.Mask
	}
	return events.CallbackPath + id
}
