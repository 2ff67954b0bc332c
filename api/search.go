package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/stkgate/stkgate/api/cursor"
	"github.com/stkgate/stkgate/api/store"
)

// Page sizes of the search.
const (
	DefaultSearchLimit = 50
	MaxSearchLimit     = 200
)

// MsgSearchUnavailable is the 503 of a search Postgres did not answer.
const MsgSearchUnavailable = "The records cannot be read right now. Please retry."

// MsgSearchTooSlow is the 503 of a search that ran out of its time in
// Postgres (store.ErrSearchTimeout): the same search would again.
const MsgSearchTooSlow = "The search looked through too many records. Narrow it with since, reference or phone."

// MsgSearchBusy is the 429 of a search beyond the searches allowed at once.
const MsgSearchBusy = "Too many searches at once. Retry after the time in the Retry-After header."

// Searches running at once, by default: a search holds one of the
// instance's Postgres connections (store's pool, shared with every
// client's payments) for up to store.DefaultSearchTimeout.
const (
	DefaultSearchConcurrency       = 4
	DefaultClientSearchConcurrency = 2
)

// searchParams are the search's query parameters, in the order their
// errors are reported.
var searchParams = [...]string{"reference", "status", "phone", "since", "limit", "cursor"}

// maxUnknownReported bounds the unknown parameters a 400 names.
const maxUnknownReported = 5

var (
	msgStatusInvalid = "The status field must be one of " + strings.Join(store.StatusFilters(), ", ") + "."
	msgSinceInvalid  = "The since field must be a date and time in RFC 3339, such as 2024-03-21T11:30:01Z (a + in its offset written %2B)."
	msgLimitInvalid  = fmt.Sprintf("The limit field must be a whole number from 1 to %d.", MaxSearchLimit)
	msgCursorInvalid = "The cursor field must be the next of an earlier answer to the same search."
)

func msgEmpty(f string) string   { return "The " + f + " field must not be empty." }
func msgTwice(f string) string   { return "The " + f + " field must be given only once." }
func msgUnknown(f string) string { return "The " + f + " parameter is not known." }

// search is a validated search query.
type search struct {
	filter store.SearchFilter
	after  *store.Position
	limit  int
	// scope is what its cursors are good for: the client and the filters.
	scope []byte
}

// parseSearch reads the query string of a search by client. Every refusal
// is a 400 naming each bad parameter with its first failing rule; an
// unknown parameter is refused too, so that a misspelt filter is not read
// as no filter, which would answer every record.
func parseSearch(rawQuery, client string) (search, error) {
	vals, errs := splitQuery(rawQuery)
	s := search{limit: DefaultSearchLimit}
	fail := func(field, msg string) { errs = append(errs, FieldError{Field: field, Messages: []string{msg}}) }
	var rawCursor string
	for _, name := range searchParams {
		vs, ok := vals[name]
		if !ok || slices.ContainsFunc(errs, func(e FieldError) bool { return e.Field == name }) {
			continue // absent, or already refused (unreadable)
		}
		if len(vs) > 1 {
			fail(name, msgTwice(name))
			continue
		}
		v := vs[0]
		if strings.TrimSpace(v) == "" {
			fail(name, msgEmpty(name))
			continue
		}
		if msg := s.set(name, v, &rawCursor); msg != "" {
			fail(name, msg)
		}
	}
	if len(errs) == 0 {
		s.scope = cursor.Scope(client, s.filter.Reference, s.filter.Status, s.filter.Phone, sinceKey(s.filter.Since))
		if rawCursor != "" {
			p, err := cursor.Decode(rawCursor, s.scope)
			if err != nil {
				fail("cursor", msgCursorInvalid)
			} else {
				s.after = &store.Position{CreatedAt: p.At, ID: p.ID}
			}
		}
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b FieldError) int { return paramRank(a.Field) - paramRank(b.Field) })
		return search{}, &RequestError{Status: http.StatusBadRequest, Message: errs[0].Messages[0], Fields: errs}
	}
	return s, nil
}

// set reads parameter name's value v into s; the error message, "" when v
// is good. The cursor is kept raw: it is read once the scope is known.
func (s *search) set(name, v string, rawCursor *string) string {
	switch name {
	case "reference":
		// The reference as POST takes it, trimmed: no stored reference
		// could match anything else.
		r, msg := validateText(name, value{kind: kindString, text: v, badUTF8: !utf8.ValidString(v)}, true, MaxReferenceLen)
		if msg == "" && strings.ContainsFunc(r, invisible) {
			msg = msgInvisible(name)
		}
		s.filter.Reference = r
		return msg
	case "status":
		if !slices.Contains(store.StatusFilters(), v) {
			return msgStatusInvalid
		}
		s.filter.Status = v
	case "phone":
		p, ok := NormalizePhone(v)
		if !ok {
			return msgPhoneInvalid
		}
		s.filter.Phone = p
	case "since":
		t, err := time.Parse(time.RFC3339, v)
		if err != nil || t.Year() < 1 {
			return msgSinceInvalid
		}
		// Postgres keeps microseconds: a since between two is the later,
		// or a record at the earlier would match (lib/pq sends
		// nanoseconds, which Postgres rounds).
		s.filter.Since = t.UTC().Add(time.Microsecond - time.Nanosecond).Truncate(time.Microsecond)
	case "limit":
		n, err := strconv.Atoi(v)
		if len(v) > 3 || strings.TrimLeft(v, "0123456789") != "" || err != nil || n < 1 || n > MaxSearchLimit {
			return msgLimitInvalid
		}
		s.limit = n
	case "cursor":
		*rawCursor = v
	}
	return ""
}

// sinceKey is since in a cursor's scope: one text per instant, whatever
// offset the client wrote it in.
func sinceKey(since time.Time) string {
	if since.IsZero() {
		return ""
	}
	return since.UTC().Format(time.RFC3339Nano)
}

func paramRank(name string) int {
	if i := slices.Index(searchParams[:], name); i >= 0 {
		return i
	}
	return len(searchParams)
}

// splitQuery is url.ParseQuery that names what it cannot read: a value
// with a bad escape is an error of its parameter (url.Values would drop it
// and the filter with it), and an unknown parameter is one of its own.
// What has no name to give (a name with a bad escape, a ';') is an error of
// "query".
func splitQuery(raw string) (map[string][]string, FieldErrors) {
	return splitParams(raw, searchParams[:])
}

// splitParams is splitQuery for an endpoint whose parameters are known.
func splitParams(raw string, known []string) (map[string][]string, FieldErrors) {
	vals := map[string][]string{}
	var errs FieldErrors
	unknown := 0
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil || strings.Contains(pair, ";") {
			if !slices.ContainsFunc(errs, func(e FieldError) bool { return e.Field == "query" }) {
				errs = append(errs, FieldError{Field: "query", Messages: []string{"The query string could not be read."}})
			}
			continue
		}
		if !slices.Contains(known, name) {
			if unknown++; unknown <= maxUnknownReported {
				shown := name
				if len(shown) > 64 {
					shown = shown[:64]
				}
				shown = strings.ToValidUTF8(shown, "\uFFFD")
				errs = append(errs, FieldError{Field: shown, Messages: []string{msgUnknown(shown)}})
			}
			continue
		}
		v, err := url.QueryUnescape(rawValue)
		if err != nil {
			if !slices.ContainsFunc(errs, func(e FieldError) bool { return e.Field == name }) {
				errs = append(errs, FieldError{Field: name, Messages: []string{"The " + name + " field could not be read: escape its % as %25."}})
			}
			vals[name] = append(vals[name], "")
			continue
		}
		vals[name] = append(vals[name], v)
	}
	return vals, errs
}

type searchBody struct {
	Success bool         `json:"success"`
	Data    []RecordView `json:"data"`
	// Next is the cursor of the page after this one; null on the last.
	Next *string `json:"next"`
}

// searchRecords is GET /api/stk-push?…: the client's own records that
// match the query, newest first, a page at a time. It reads the read model
// only, never the stream: a request just accepted shows once projected.
func (h *Handler) searchRecords(c echo.Context) error {
	client := clientOf(c)
	q, err := parseSearch(c.Request().URL.RawQuery, client)
	if err != nil {
		return err
	}
	release, ok := h.searches.acquire(client)
	if !ok {
		return &limitedError{message: MsgSearchBusy, retryAfter: 1}
	}
	defer release()
	// Not cancelled by a client that hangs up, as a single record's read
	// (get); a page is one index scan, bounded by readTimeout here and by
	// the store's SearchTimeout in Postgres.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), readTimeout)
	defer cancel()
	// One more than the page: whether there is a next page is known
	// without a query that finds it empty.
	recs, err := h.store.Search(ctx, client, q.filter, q.after, q.limit+1)
	switch {
	case errors.Is(err, store.ErrBadFilter):
		return err // a fault of parseSearch: 500
	case errors.Is(err, store.ErrSearchTimeout):
		return &unavailableError{message: MsgSearchTooSlow, cause: err}
	case err != nil:
		return &unavailableError{message: MsgSearchUnavailable, cause: err}
	}
	return c.JSON(http.StatusOK, pageOf(recs, q.limit, q.scope))
}

// pageOf is the answer of a search from recs, read with one more than the
// page's limit: a record beyond limit means a next page, whose cursor is
// the position of the page's last record.
func pageOf(recs []store.Record, limit int, scope []byte) searchBody {
	body := searchBody{Success: true, Data: make([]RecordView, 0, min(len(recs), limit))}
	if len(recs) > limit {
		recs = recs[:limit]
		last := recs[len(recs)-1]
		next := cursor.Encode(cursor.Position{At: last.CreatedAt, ID: last.ID}, scope)
		body.Next = &next
	}
	for _, r := range recs {
		body.Data = append(body.Data, ViewOf(r))
	}
	return body
}

// searchSlots bounds the searches running at once, over the instance and
// per client. A search beyond either bound is refused at once rather than
// queued: a queue would hold the request, and its client's retries would
// find it no sooner. The bounds are per instance.
type searchSlots struct {
	mu        sync.Mutex
	total     int
	perClient int
	n         int
	byClient  map[string]int
}

func newSearchSlots(total, perClient int) *searchSlots {
	if total <= 0 {
		total = DefaultSearchConcurrency
	}
	if perClient <= 0 {
		perClient = DefaultClientSearchConcurrency
	}
	return &searchSlots{total: total, perClient: min(perClient, total), byClient: map[string]int{}}
}

// acquire takes a slot for client's search; ok false when none is free.
func (s *searchSlots) acquire(client string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n >= s.total || s.byClient[client] >= s.perClient {
		return nil, false
	}
	s.n++
	s.byClient[client]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.n--
		if s.byClient[client]--; s.byClient[client] == 0 {
			delete(s.byClient, client)
		}
	}, true
}

// running is how many searches hold a slot.
func (s *searchSlots) running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}
