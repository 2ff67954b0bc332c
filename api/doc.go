// Package api is stkgate's HTTP API (echo v4), the publish side and the
// poll side of an STK push:
//
//   - POST /api/stk-push validates a client's request, publishes
//     stk.requested and answers once JetStream has acked it (202), or, in
//     sync mode, once Daraja has answered the push (200 with the record);
//     an optional Idempotency-Key, claimed in Postgres before the publish,
//     makes a retried request answer with the first one's tracking id
//     instead of prompting the customer again;
//   - GET /api/stk-push/:tracking_id answers from the Postgres read model
//     (package store), which the projector keeps, and from the STK stream
//     for a request accepted but not projected yet;
//   - GET /api/stk-push?reference=…&phone=…&status=…&since=… finds the
//     client's own records in the read model alone, newest first, a keyset
//     page at a time (search.go, package cursor);
//   - GET /api/webhook-deliveries?tracking_id=… lists the client's webhook
//     deliveries of a payment and their attempts (webhooks.go);
//   - GET /healthz and /readyz are for the orchestrator.
//
// Every /api request carries X-API-Token; the client it belongs to scopes
// what the request may see. Run composes the whole service; NewHandler is
// the handler alone, for tests and embedding.
package api
