package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/api/idemkey"
	"github.com/stkgate/stkgate/api/store"
)

// IdempotencyHeader is the optional header of POST /api/stk-push that makes
// a retried request safe: the same key with the same request answers with
// the first one's tracking id and sends nothing again.
const IdempotencyHeader = idemkey.Header

// ReplayedHeader is set to "true" on an answer given from an earlier
// request with the same Idempotency-Key.
const ReplayedHeader = "Idempotent-Replayed"

// MaxIdempotencyKeyLen is the longest Idempotency-Key, in characters.
const MaxIdempotencyKeyLen = idemkey.MaxLen

// Idempotency defaults.
const (
	// DefaultIdempotencyTTL is how long a key is kept from its first use.
	DefaultIdempotencyTTL = 24 * time.Hour
	// DefaultIdempotencyLease is how long a request that claimed a key
	// keeps others with it out (409) before one may take it over, in case
	// the api holding it died. It must outlast a publish (PublishTimeout).
	DefaultIdempotencyLease = 30 * time.Second
	// MinIdempotencyTTL and MaxIdempotencyTTL bound IDEMPOTENCY_TTL.
	MinIdempotencyTTL = time.Minute
	MaxIdempotencyTTL = 30 * 24 * time.Hour
)

// Messages of the idempotency answers.
const (
	MsgKeyInvalid  = "The Idempotency-Key header must be 1 to 255 printable ASCII characters."
	MsgKeyMismatch = "The Idempotency-Key was already used with a different request."
	MsgKeyBusy     = "A request with this Idempotency-Key is still being accepted. Retry shortly with the same key."
	// MsgUnconfirmed is the 503 of a keyed request whose publish had an
	// unknown outcome: unlike MsgUnavailable it cannot say that nothing
	// was sent, but a retry with the key is safe.
	MsgUnconfirmed = "The request could not be confirmed right now. Retry with the same Idempotency-Key: it will not be sent twice."
)

// busyRetryAfterSeconds is the Retry-After of a 409.
const busyRetryAfterSeconds = 1

// errKeyBusy is the 409 of a key whose first request is still being
// accepted.
var errKeyBusy = errors.New("idempotency key busy")

// idempotencyKeyOf returns the request's Idempotency-Key, "" when it has
// none, or a 400 when the header is there but not a valid key (empty, too
// long, not printable ASCII, or given twice).
func idempotencyKeyOf(h http.Header) (string, error) {
	k, ok := idemkey.Of(h)
	if !ok {
		return "", badRequest("%s", MsgKeyInvalid)
	}
	return k, nil
}

// requestHash is the canonical hash of a validated request: the values
// after normalisation, so that "1500" and 1500, or 0712… and +254712…,
// are the same request. The version prefix lets the encoding change
// without old keys matching new requests by accident. callback_url is
// left out when empty, so that a key stored before it existed still
// matches its request; given, it is part of the request (another URL
// under the same key is a 422, not the first request's answer).
func requestHash(r Request) string {
	b, err := json.Marshal(struct {
		Phone     string `json:"phone"`
		Amount    int64  `json:"amount"`
		Reference string `json:"reference"`
		Tag       string `json:"tag"`
		Callback  string `json:"callback_url,omitempty"`
	}{r.Phone, r.Amount, r.Reference, r.Tag, r.CallbackURL})
	if err != nil {
		panic(err) // strings and an integer always encode
	}
	sum := sha256.Sum256(append([]byte("stkgate.request.v1\x00"), b...))
	return hex.EncodeToString(sum[:])
}

// heldKey is an idempotency key the request holds while it publishes.
type heldKey struct {
	key    string
	holder string
	// takenOver: an earlier holder may have published before it died, so
	// the claim is never released, only left for the next retry.
	takenOver bool
}

// publishNotStored reports whether a failed publish certainly did not store
// the event: it never left this process, no stream took the subject, or
// JetStream refused it. Anything else (a timeout, a connection lost while
// waiting for the ack, an unreadable ack) may have stored it.
func publishNotStored(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr),
		errors.Is(err, errNotSent),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrMaxPayload),
		errors.Is(err, nats.ErrBadSubject),
		errors.Is(err, nats.ErrInvalidConnection),
		errors.Is(err, nats.ErrHeadersNotSupported):
		return true
	}
	return false
}

// claimKey claims key for req. It returns the tracking id the request
// stands for, the claim when this request must publish (nil when the key's
// request was accepted before: a replay), or the error to answer with.
func (h *Handler) claimKey(ctx context.Context, client, key string, req Request, newID string) (string, *heldKey, bool, error) {
	// A client that hangs up mid-claim must not leave the claim's outcome
	// undecided: it would block the key for a lease.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
	defer cancel()
	claim, err := h.store.ClaimKey(ctx, store.ClaimArgs{
		Client: client, Key: key, RequestHash: requestHash(req), TrackingID: newID,
		TTL: h.idemTTL, Lease: h.idemLease,
	})
	if err != nil {
		// Nothing of this request is published, but the key's history
		// cannot be read: an earlier attempt under it may have been
		// (an api killed after its publish, before its answer). "Nothing
		// was sent" could make the client give up on a prompted payment;
		// a retry with the key is safe whatever happened.
		return "", nil, false, &unavailableError{message: MsgUnconfirmed, cause: fmt.Errorf("%w: %w", errNotSent, err)}
	}
	switch claim.Outcome {
	case store.ClaimNew:
		return claim.TrackingID, &heldKey{key: key, holder: claim.Holder}, false, nil
	case store.ClaimTakenOver:
		return claim.TrackingID, &heldKey{key: key, holder: claim.Holder, takenOver: true}, true, nil
	case store.ClaimDone:
		return claim.TrackingID, nil, false, nil
	case store.ClaimBusy:
		return claim.TrackingID, nil, false, errKeyBusy
	case store.ClaimMismatch:
		return "", nil, false, &RequestError{
			Status:  http.StatusUnprocessableEntity,
			Message: MsgKeyMismatch,
			Fields:  FieldErrors{{Field: "idempotency_key", Messages: []string{MsgKeyMismatch}}},
		}
	}
	return "", nil, false, fmt.Errorf("claim idempotency key: unexpected outcome %s", claim.Outcome)
}

// settleKey records what the publish of a held key came to. Its own
// failures are logged, not answered: the client's answer depends on the
// publish, and a claim left pending is taken over after its lease.
func (h *Handler) settleKey(c interface{ Request() *http.Request }, client, id string, k *heldKey, publishErr error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), readTimeout)
	defer cancel()
	var (
		err  error
		what string
	)
	switch {
	case publishErr == nil:
		what = "complete"
		err = h.store.CompleteKey(ctx, client, k.key, k.holder)
	case publishNotStored(publishErr) && !k.takenOver:
		what = "release"
		err = h.store.ReleaseKey(ctx, client, k.key, k.holder)
	default:
		what = "end the lease of"
		err = h.store.EndLease(ctx, client, k.key, k.holder)
	}
	if err != nil {
		h.log.Warn("cannot "+what+" the idempotency key; a retry takes it over after the lease",
			"tracking_id", id, "client", client, "error", err)
	}
}

// retryAfter sets the Retry-After header.
func retryAfter(h http.Header, seconds int) { h.Set("Retry-After", strconv.Itoa(seconds)) }
