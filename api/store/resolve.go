package store

// Rewriting the completions of a batch that name another payment's
// CheckoutRequestID or receipt.

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/stkgate/stkgate/events"
)

// resolveCheckouts returns evs with every completion that names a
// CheckoutRequestID another payment holds (in the table, or by an earlier
// event of evs; a dispatched claims before any completion) rewritten as an
// invalid outcome without Daraja's ids. A dispatched that names another
// payment's is ErrConflict: it is no outcome, and is terminated alone.
func resolveCheckouts(ctx context.Context, tx *sqlx.Tx, evs []events.Event) ([]events.Event, []rewrite, error) {
	var ids []string
	for _, ev := range evs {
		if co := checkoutOf(ev); co != "" {
			ids = append(ids, co)
		}
	}
	owners := make(map[string]string, len(ids))
	var held []struct {
		Checkout string `db:"checkout_request_id"`
		Tracking string `db:"tracking_id"`
	}
	if err := tx.SelectContext(ctx, &held,
		`SELECT checkout_request_id, tracking_id::text AS tracking_id FROM stk_pushes WHERE checkout_request_id = ANY($1)`,
		pq.Array(ids)); err != nil {
		return nil, nil, fmt.Errorf("apply: look up CheckoutRequestIDs: %w", err)
	}
	for _, h := range held {
		owners[h.Checkout] = h.Tracking
	}
	// ownerOf claims co for id when nobody has it, and says who has it.
	ownerOf := func(co, id string) string {
		if o, ok := owners[co]; ok {
			return o
		}
		owners[co] = id
		return id
	}
	out := slices.Clone(evs)
	for _, ev := range evs {
		if d, ok := ev.(events.Dispatched); ok && d.CheckoutRequestID != "" {
			if o := ownerOf(d.CheckoutRequestID, Canonical(d.TrackingID)); o != Canonical(d.TrackingID) {
				return nil, nil, fmt.Errorf("%w: dispatched of %s names CheckoutRequestID %s of payment %s",
					ErrConflict, d.TrackingID, d.CheckoutRequestID, o)
			}
		}
	}
	var rewrites []rewrite
	for i, ev := range evs {
		c, ok := ev.(events.Completed)
		if !ok || c.CheckoutRequestID == "" {
			continue
		}
		if o := ownerOf(c.CheckoutRequestID, Canonical(c.TrackingID)); o != Canonical(c.TrackingID) {
			why := fmt.Sprintf("its CheckoutRequestID %s is payment %s's", c.CheckoutRequestID, o)
			c = invalidOutcome(c, why)
			c.MerchantRequestID, c.CheckoutRequestID = "", ""
			out[i] = c
			rewrites = append(rewrites, rewrite{trackingID: c.TrackingID, code: c.ResultCode, why: why})
		}
	}
	return out, rewrites, nil
}

// resolveReceipts returns evs with every completion whose receipt another
// payment holds (in the table, or by an earlier completion of evs) rewritten
// as an invalid outcome without it. Receipts are compared in upper case, as
// receiptIndex compares them.
func resolveReceipts(ctx context.Context, tx *sqlx.Tx, evs []events.Event) ([]events.Event, []rewrite, error) {
	var keys []string
	for _, ev := range evs {
		if c, ok := ev.(events.Completed); ok && c.Receipt != "" {
			keys = append(keys, strings.ToUpper(c.Receipt))
		}
	}
	if len(keys) == 0 {
		return evs, nil, nil
	}
	var held []struct {
		Receipt  string `db:"receipt"`
		Tracking string `db:"tracking_id"`
	}
	if err := tx.SelectContext(ctx, &held,
		`SELECT upper(transaction_code) AS receipt, tracking_id::text AS tracking_id FROM stk_pushes
		 WHERE upper(transaction_code) = ANY($1)`, pq.Array(keys)); err != nil {
		return nil, nil, fmt.Errorf("apply: look up receipts: %w", err)
	}
	owners := make(map[string]string, len(keys))
	for _, h := range held {
		owners[h.Receipt] = h.Tracking
	}
	out := slices.Clone(evs)
	var rewrites []rewrite
	for i, ev := range evs {
		c, ok := ev.(events.Completed)
		if !ok || c.Receipt == "" {
			continue
		}
		key, id := strings.ToUpper(c.Receipt), Canonical(c.TrackingID)
		o, claimed := owners[key]
		if !claimed {
			owners[key] = id
			continue
		}
		if o == id {
			continue
		}
		const why = "its receipt is already another payment's"
		out[i] = invalidOutcome(c, why)
		rewrites = append(rewrites, rewrite{trackingID: c.TrackingID, code: resultCode(out[i]), why: why, owner: o})
	}
	return out, rewrites, nil
}

// resultCode is a completion's result code, "" for another event.
func resultCode(ev events.Event) string {
	if c, ok := ev.(events.Completed); ok {
		return c.ResultCode
	}
	return ""
}

func checkoutOf(ev events.Event) string {
	switch e := ev.(type) {
	case events.Dispatched:
		return e.CheckoutRequestID
	case events.Completed:
		return e.CheckoutRequestID
	}
	return ""
}
