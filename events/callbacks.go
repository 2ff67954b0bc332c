package events

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The stream where callback-ingest keeps every callback it receives, raw,
// before it does anything else with it: Safaricom never sends a callback
// twice, so this copy is the only one there will ever be. Its subjects are
// outside stk.>, whose every message the projector decodes as an event.
const (
	CallbackStreamName = "STK_CALLBACKS"
	CallbackSubjectAll = "stkcb.>"
)

// CallbackSubjectReceived is where a callback for a known payment (or one
// whose payment could not be looked up yet) is kept:
// stkcb.received.<tracking_id>. Every callback kept there is applied
// (CallbackApplyConsumer).
func CallbackSubjectReceived(trackingID string) string { return "stkcb.received." + trackingID }

// CallbackSubjectUnmatched is where a callback that cannot be (or was not)
// applied to a payment is kept, for inspection: stkcb.unmatched.<reason>.
func CallbackSubjectUnmatched(reason string) string { return "stkcb.unmatched." + reason }

// CallbackSubjectRefused is where a refused callback whose token is right
// for its tracking id (say, UnmatchedForbiddenSource: a Safaricom address
// missing from an outdated allowlist) is kept:
// stkcb.unmatched.<reason>.<tracking_id>. Nobody without that payment's
// token can store a message there, so no flood of forgeries can push it out
// (CallbackMaxPerSubject); refused callbacks without a valid token share
// stkcb.unmatched.<reason>.
func CallbackSubjectRefused(reason, trackingID string) string {
	return "stkcb.unmatched." + reason + "." + trackingID
}

// Why a callback was kept as unmatched: the last token of its subject, and
// its CallbackHeaderReason.
const (
	// UnmatchedBadPath: the URL names no tracking id (the bare callback
	// path, a malformed id, extra path segments).
	UnmatchedBadPath = "bad_path"
	// UnmatchedUnparseable: the body is not a callback stkgate can read.
	UnmatchedUnparseable = "unparseable"
	// UnmatchedUnknownID: no stk.requested for the tracking id.
	UnmatchedUnknownID = "unknown_id"
	// UnmatchedOtherPush: the CheckoutRequestID is not the one Daraja gave
	// for the payment's push.
	UnmatchedOtherPush = "other_push"
	// UnmatchedConflict: the payment already has another final outcome.
	UnmatchedConflict = "conflict"
	// UnmatchedUnverified: a stored event of the payment (its request,
	// push or outcome) cannot be decoded, so the callback was kept but not
	// applied: no retry mends it. A lookup that merely failed (NATS
	// trouble) keeps the callback on stkcb.received.<id>, with the reason
	// "unverified", where callback-ingest's applier (CallbackApplyConsumer)
	// applies it once the stream can be read.
	UnmatchedUnverified = "unverified"
	// UnmatchedNoToken: the URL names a tracking id but no callback token:
	// a push sent before CALLBACK_SECRET, or a forgery.
	UnmatchedNoToken = "no_token"
	// UnmatchedBadToken: the callback token is not the tracking id's under
	// any CALLBACK_SECRET: a forgery, or a secret dropped too early.
	UnmatchedBadToken = "bad_token"
	// UnmatchedForbiddenSource: the sender is outside CALLBACK_ALLOW_CIDRS.
	UnmatchedForbiddenSource = "forbidden_source"
)

// CallbackSubjectConfirm is where callback-ingest keeps a success callback
// that is not trusted as it stands (its amount or phone disagrees with the
// request, or CALLBACK_CONFIRM=always): stkcb.confirm.<tracking_id>. It
// publishes no stk.completed for it; the reconciler consumes these subjects
// (ReconcilerConfirmConsumer) and publishes the outcome Daraja's STK query
// gives, with source "query". The reconciler also keeps there, on the
// holder's subject, a copy of a success held because its receipt was taken
// (ConfirmReceiptHolder): a question about the holder, not its callback.
func CallbackSubjectConfirm(trackingID string) string { return "stkcb.confirm." + trackingID }

// CallbackReasonLate is the CallbackHeaderReason of a callback kept on
// stkcb.received.<id> for a payment stkgate finished with a code of its own
// (DecidedByStkgate): callback-ingest's applier publishes it as
// stk.late_result once it passes the checks of any success. The reconciler
// keeps there, with this reason, a callback held for confirmation whose
// payment ended so while there was no CheckoutRequestID to query.
const CallbackReasonLate = "late_result"

// Why a kept callback awaits confirmation: its CallbackHeaderReason.
const (
	ConfirmAmountMismatch = "confirm_amount_mismatch" // the amount differs from the request's
	ConfirmPhoneMismatch  = "confirm_phone_mismatch"  // the phone differs from the request's
	ConfirmNoAmount       = "confirm_no_amount"       // a success without an amount
	ConfirmNoPhone        = "confirm_no_phone"        // a success without a phone of digits to compare
	ConfirmAlways         = "confirm_always"          // CALLBACK_CONFIRM=always
	ConfirmFastFailure    = "confirm_fast_failure"    // a failure sooner after the push than a customer can answer
	// ConfirmReceiptTaken: a success whose receipt another payment's
	// counted callback claimed first (ReceiptsBucket). The copy names the
	// holder (CallbackHeaderReceiptHolder) and the receipt
	// (CallbackHeaderReceipt).
	ConfirmReceiptTaken = "confirm_receipt_taken"
	// ConfirmReceiptHolder: not a callback of the payment on whose subject
	// it is kept, but the copy of a ConfirmReceiptTaken one (its payment is
	// CallbackHeaderReceiptClaimant), kept on the holder's
	// stkcb.confirm.<holder> by the reconciler, which asks Daraja's STK
	// query about the holder's push: the holder's recorded success may be
	// the forgery.
	ConfirmReceiptHolder = "confirm_receipt_holder"
)

// UnmatchedReceiptDisputed: a payment recorded as paid with a receipt that
// another payment's callback named too, and for which Daraja's STK query
// then did not confirm the payment. Outcomes are final, so the record still
// shows Success: this copy (on stkcb.unmatched.receipt_disputed.<holder>,
// CallbackSubjectRefused) and the reconciler's error line are the
// operator's notice.
const UnmatchedReceiptDisputed = "receipt_disputed"

// UnmatchedLateUnconfirmed: a success for a payment stkgate had finished
// itself (DecidedByStkgate) that failed the checks of any success (its
// receipt another payment's, its amount or phone not the request's) and
// that Daraja's STK query cannot confirm: the push's answer was lost, so
// there is no CheckoutRequestID to ask about. Published, it would show the
// payment paid with that receipt; it is kept instead on
// stkcb.unmatched.late_unconfirmed.<tracking_id> (CallbackSubjectRefused)
// for an operator, and the payment stays Unknown.
const UnmatchedLateUnconfirmed = "late_unconfirmed"

// Headers of a kept callback; the body is the callback's, byte for byte
// (cut for a callback refused unauthenticated: CallbackHeaderTruncated).
const (
	CallbackHeaderID           = "Stkgate-Callback-Id" // unique per delivery; also in callback-ingest's logs
	CallbackHeaderReceivedAt   = "Stkgate-Received-At" // RFC 3339, UTC, nanoseconds
	CallbackHeaderRemoteAddr   = "Stkgate-Remote-Addr" // the TCP peer
	CallbackHeaderForwardedFor = "Stkgate-Forwarded-For"
	CallbackHeaderMethod       = "Stkgate-Method"
	CallbackHeaderPath         = "Stkgate-Path" // the request URI as received
	CallbackHeaderContentType  = "Stkgate-Content-Type"
	CallbackHeaderShortcode    = "Stkgate-Business-Shortcode" // Daraja's BusinessShortCode header
	CallbackHeaderTrackingID   = "Stkgate-Tracking-Id"        // when the path names a well-formed one
	CallbackHeaderReason       = "Stkgate-Reason"             // an Unmatched* reason, or "repeated"
	CallbackHeaderDetail       = "Stkgate-Detail"             // e.g. why the body is unparseable
	// CallbackHeaderTruncated is set on the copy of a callback refused
	// before its token was verified, when its body was cut (to
	// callback-ingest's RefusedBodyBytes): the body's length as received.
	CallbackHeaderTruncated = "Stkgate-Truncated-From"
	// On a ConfirmReceiptTaken or ConfirmReceiptHolder copy: the receipt
	// (upper case), the payment that claimed it first, and the payment
	// whose callback named it later.
	CallbackHeaderReceipt         = "Stkgate-Receipt"
	CallbackHeaderReceiptHolder   = "Stkgate-Receipt-Holder"
	CallbackHeaderReceiptClaimant = "Stkgate-Receipt-Claimant"
	// CallbackHeaderQueryResult is, on an UnmatchedReceiptDisputed copy,
	// what Daraja's STK query answered about the holder's push.
	CallbackHeaderQueryResult = "Stkgate-Query-Result"
)

// CallbackRetention is how long a kept callback stays: long enough to settle
// any dispute about a payment.
const CallbackRetention = 90 * 24 * time.Hour

// CallbackMaxPerSubject bounds the callbacks kept on one subject. The
// webhook is public: a flood of forged callbacks must not fill the disk,
// nor push out the genuine ones. Past the bound the oldest of that subject
// goes. Callbacks refused before their token is verified share the few
// stkcb.unmatched.<reason> subjects they can reach, cut by callback-ingest
// to a few KiB each (so some 60 MB a reason); a genuine callback, its token
// right, is on a subject of its payment's own (stkcb.received.<id>,
// CallbackSubjectRefused) or on one only a right token reaches.
const CallbackMaxPerSubject = 10000

// CallbackStreamConfig is the STK_CALLBACKS stream. Every delivery is worth
// keeping, a repeated one included, so its duplicate window only absorbs a
// retried publish of the same delivery.
func CallbackStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        CallbackStreamName,
		Description: "stkgate: every STK callback as received, raw",
		Subjects:    []string{CallbackSubjectAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    atLeastOne(replicas),
		Duplicates:  2 * time.Minute,
		MaxAge:      CallbackRetention,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,

		MaxMsgsPerSubject: CallbackMaxPerSubject,
	}
}

// EnsureCallbackStream creates the STK_CALLBACKS stream or brings it up to
// date, leaving a matching one alone (see EnsureStream).
func EnsureCallbackStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	return ensureStreamConfig(ctx, js, CallbackStreamConfig(replicas))
}

// ConsumerCallbackApply is callback-ingest's durable consumer of the
// callbacks kept for a known payment.
const ConsumerCallbackApply = "callback-apply"

// CallbackApplyConsumer hands every callback kept on
// stkcb.received.<tracking_id> to callback-ingest, which applies the ones
// whose stk.completed is not in the STK stream: callback-ingest keeps a
// callback before it publishes its outcome, and a crash, a failed publish
// or a lookup that failed in between must not leave a kept callback
// unapplied. Applying is safe to repeat: the completion's Nats-Msg-Id
// dedupes it, and a payment with an outcome is left as it is.
//
// No BackOff and no MaxDeliver: the applier naks with delays of its own
// and must never give a genuine callback up.
func CallbackApplyConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerCallbackApply,
		Description:   "applies every kept callback whose outcome is not yet in the STK stream",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: CallbackSubjectReceived("*"),
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 1024,
	}
}

// KeepAgain is a kept callback (msg) to be kept on another subject with
// another CallbackHeaderReason: its body and headers as they were, but for
// the reason and the Nats-Msg-Id (the caller sets its own).
func KeepAgain(msg jetstream.Msg, subject, reason string) *nats.Msg {
	out := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: msg.Data()}
	for k, v := range msg.Headers() {
		if k != CallbackHeaderReason && k != jetstream.MsgIDHeader {
			out.Header[k] = v
		}
	}
	out.Header.Set(CallbackHeaderReason, reason)
	return out
}
