package callback

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stkgate/stkgate/events"
)

// TestLateFailureAndSuccessRacing: a late failure and a late success of one
// payment published at the same moment are stored in the order EVENTS.md
// promises: the failure, then the success that replaces it, or the success
// alone; never a failure after the success. (Reading the stored late result
// and then publishing, without a check that nothing came between, stored
// [success, failure] for a few payments in two hundred.)
func TestLateFailureAndSuccessRacing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	h, err := newHandler(Options{JS: e.ns.JS, Stream: e.ns.Stream, Conn: e.ns.Conn, Secrets: testSecrets,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	const payments = 200
	ids := make([]string, payments)
	for i := range ids {
		ids[i] = uuid.NewString()
		e.noAnswer(payment(ids[i]))
	}
	var wg sync.WaitGroup
	for i, id := range ids {
		prev := events.Completed{Payment: payment(id), ResultCode: events.CodeNoAnswer, Source: events.SourceDispatcher}
		success := Callback{ResultCode: "0", ResultDesc: "ok", CheckoutRequestID: successCheckoutID,
			Receipt: fmt.Sprintf("RACE%06d", i), TransactionDate: "20240321143055"}
		failure := Callback{ResultCode: "1032", ResultDesc: "Request cancelled by user", CheckoutRequestID: successCheckoutID}
		for _, cb := range []Callback{success, failure} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := h.lateResult(context.Background(), h.log, prev, cb); err != nil {
					t.Errorf("%s: %v", id, err)
				}
			}()
		}
	}
	wg.Wait()
	for _, id := range ids {
		lates := e.lateResults(id)
		ok := len(lates) == 1 && lates[0].ResultCode == "0" ||
			len(lates) == 2 && lates[0].ResultCode == "1032" && lates[1].ResultCode == "0"
		if !ok {
			codes := make([]string, len(lates))
			for i, l := range lates {
				codes[i] = l.ResultCode
			}
			t.Errorf("%s: late results %v, want [0] or [1032 0]", id, codes)
		}
	}
}
