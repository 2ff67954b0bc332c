package store

// The late results of a batch and the statement that keeps them on their rows.

import (
	"github.com/lib/pq"
)

// lateResults are the late results of a batch, one per tracking id: the
// first one, unless a success follows a failure (events.LateReplaces), as
// setLateResult decides between the batch and the row.
type lateResults struct {
	ids, results []string
	successes    []bool
	index        map[string]int
}

func (l *lateResults) add(id, result string, success bool) {
	if l.index == nil {
		l.index = map[string]int{}
	}
	if i, ok := l.index[id]; ok {
		if success && !l.successes[i] {
			l.results[i], l.successes[i] = result, true
		}
		return
	}
	l.index[id] = len(l.ids)
	l.ids = append(l.ids, id)
	l.results = append(l.results, result)
	l.successes = append(l.successes, success)
}

func (l *lateResults) args() []any {
	return []any{pq.Array(l.ids), pq.Array(l.results)}
}

// setLateResult keeps a late result on its row, which the upsert before it
// made sure exists, unless the row has one already, but for a late failure,
// which a late success replaces: a success pays someone and a failure
// nobody, and a failure anyone holding the CallBackURL can send first must
// not hide the customer's payment (events.LateReplaces). Nothing replaces a
// success, so applying late results again, in any order, changes nothing
// more. It changes no outcome
// field, whatever the row's stage: a late result applied before its
// payment's completion (a redelivery, another projector) is kept, and the
// completion, when it comes, decides the outcome as ever. Rows are locked
// in tracking id order, as by the upsert.
const setLateResult = `
UPDATE stk_pushes AS t SET late_result = i.late_result::jsonb, updated_at = now()
FROM (SELECT * FROM unnest($1::uuid[], $2::text[]) AS u(tracking_id, late_result) ORDER BY tracking_id) AS i
WHERE t.tracking_id = i.tracking_id
  AND (t.late_result IS NULL
       OR (t.late_result->>'response_code' IS DISTINCT FROM '0' AND i.late_result::jsonb->>'response_code' = '0'))
`
