package events

import (
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
