package callback

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/worker"
)

// claimReceipt claims receipt for payment id in events.ReceiptsBucket, just
// before id's success would count with it, and returns the tracking id of
// the payment that claimed it first ("" when that is id: a first claim, or
// id's own callback again). The claim is a create-only key, so of two
// payments naming one receipt only the first counts with it, whichever
// callback-ingest instance takes each; the other is held for Daraja's STK
// query (events.ConfirmReceiptTaken).
//
// Where the receipt is detected matters: the api's unique index on the
// receipt also keeps the first completion projected, but by then both
// completions are published, and the second, perhaps the genuine one, can
// only be recorded as an invalid outcome. Held here, the second payment
// gets Daraja's own answer instead.
func (h *handler) claimReceipt(ctx context.Context, id, receipt string) (string, error) {
	kv, err := h.receiptClaims(ctx)
	if err != nil {
		return "", err
	}
	key := events.ReceiptKey(receipt)
	_, err = kv.Create(ctx, key, []byte(id))
	if err == nil {
		return "", nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return "", fmt.Errorf("claim receipt: %w", err)
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		// Not found (a replica behind, a claim just expired): retried
		// with the callback, as any failed lookup.
		return "", fmt.Errorf("read the receipt's claim: %w", err)
	}
	if holder := string(e.Value()); holder != id {
		return holder, nil
	}
	return "", nil
}

// receiptClaims is the receipts bucket: Options.Receipts, or, when the
// caller gave none, opened (created with one replica if missing) on first
// use. Run ensures it with the configured replicas before serving.
func (h *handler) receiptClaims(ctx context.Context) (jetstream.KeyValue, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.receipts != nil {
		return h.receipts, nil
	}
	kv, err := worker.EnsureBucket(ctx, h.js, events.ReceiptsConfig(1))
	if err != nil {
		return nil, err
	}
	h.receipts = kv
	return kv, nil
}
