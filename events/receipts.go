package events

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// ReceiptsBucket is the JetStream key-value bucket where callback-ingest
// claims each M-Pesa receipt for the first payment whose success callback
// counted with it: the key is the receipt in upper case (ReceiptKey), the
// value that payment's tracking id. A key is only ever created, never
// overwritten, so the first claim stands. A receipt is one payment's: a
// later success naming a receipt another payment claimed is held for
// Daraja's STK query (ConfirmReceiptTaken) instead of counting, where the
// api's unique index would otherwise keep whichever came first.
const ReceiptsBucket = "STK_RECEIPTS"

// ReceiptsConfig is the bucket's definition. A claim lives as long as the
// kept callbacks (CallbackRetention), well past any callback of its push.
func ReceiptsConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      ReceiptsBucket,
		Description: "stkgate: the payment that first claimed each M-Pesa receipt",
		History:     1,
		TTL:         CallbackRetention,
		Storage:     jetstream.FileStorage,
		Replicas:    atLeastOne(replicas),
	}
}

// ReceiptKey is a receipt's key in ReceiptsBucket: upper case, as the api's
// unique index compares receipts. A receipt as callback-ingest parses it
// (letters and digits) is a valid key.
func ReceiptKey(receipt string) string { return strings.ToUpper(receipt) }

// EnsureReceipts opens the receipts bucket, creating it when missing. An
// existing bucket is left as it is (see EnsureStream: updating races with
// services starting at the same moment).
func EnsureReceipts(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	cfg := ReceiptsConfig(replicas)
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}
