package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/metrics"
	"github.com/stkgate/stkgate/events/testkit/wait"
)

const initechToken = "initech-test-token-0003"

// searchFixture is one record of the search tests, as the model sees it.
type searchFixture struct {
	client, ref, phone, code string
	at                       time.Time
	// Known once applied.
	id         int64
	trackingID string
}

// matches is the model of a search: what the api must answer, worked out
// without SQL.
func (f searchFixture) matches(client string, q url.Values) bool {
	if f.client != client {
		return false
	}
	if r := q.Get("reference"); r != "" && strings.TrimSpace(r) != f.ref {
		return false
	}
	if p := q.Get("phone"); p != "" {
		n, _ := NormalizePhone(p)
		if n != f.phone {
			return false
		}
	}
	if s := q.Get("status"); s != "" {
		status, label := events.Outcome(f.code)
		if s != label && s != fmt.Sprint(status) {
			return false
		}
	}
	if s := q.Get("since"); s != "" {
		since, _ := time.Parse(time.RFC3339, s)
		if f.at.Before(since) {
			return false
		}
	}
	return true
}

// newestFirst is the search's order.
func newestFirst(a, b searchFixture) int {
	if c := b.at.Compare(a.at); c != 0 {
		return c
	}
	return cmp.Compare(b.id, a.id)
}

// applyFixture writes f into the read model as the projector would and
// fills in its ids.
func applyFixture(ctx context.Context, s *store.Store, f *searchFixture) error {
	f.trackingID = uuid.Must(uuid.NewV7()).String()
	p := events.Payment{TrackingID: f.trackingID, Client: f.client, Phone: f.phone, Amount: 100,
		Reference: f.ref, RequestedAt: f.at}
	evs := []events.Event{events.Requested{Payment: p}}
	if f.code != "" {
		c := events.Completed{Payment: p, ResultCode: f.code, Source: events.SourceCallback, CompletedAt: f.at.Add(time.Minute)}
		if f.code == "0" {
			c.Receipt = strings.ToUpper(strings.ReplaceAll(f.trackingID, "-", ""))[20:]
		}
		evs = append(evs, c)
	}
	if err := s.Apply(ctx, evs); err != nil {
		return err
	}
	rec, err := s.Get(ctx, f.client, f.trackingID)
	f.id = rec.ID
	return err
}

// searchFixtures are acme's and globex's records: references, phones and
// outcomes repeated across both clients, two records created in the same
// microsecond (the id breaks the tie).
func searchFixtures(t *testing.T, e *testEnv) []searchFixture {
	t.Helper()
	codes := []string{"", "0", "1032", "1", "2001", events.CodeNoAnswer, "1037", "stkgate.unreachable"}
	var fs []searchFixture
	for i := range 30 {
		at := fixedNow.Add(-time.Duration(i) * 7 * time.Minute).Add(time.Duration(i) * time.Microsecond)
		if i == 11 {
			at = fs[10].at
		}
		ref := fmt.Sprintf("R-%d", i)
		switch i % 5 {
		case 0:
			ref = "INV-1"
		case 1:
			ref = "INV-2"
		}
		phone := fmt.Sprintf("2547120001%02d", i)
		if i%3 == 0 {
			phone = "254712000001"
		}
		for _, client := range []string{"acme", "globex"} {
			if client == "globex" && i%2 == 1 || client == "acme" && i == 12 {
				continue
			}
			fs = append(fs, searchFixture{client: client, ref: ref, phone: phone, code: codes[i%len(codes)], at: at})
		}
	}
	// Exactly a default page of acme's.
	for i := range DefaultSearchLimit {
		fs = append(fs, searchFixture{client: "acme", ref: "BULK", phone: "254712999999", at: fixedNow.Add(-time.Duration(i) * time.Second)})
	}
	// Applied out of order, as a projector behind may: the order is the
	// creation time's, not the insertion's.
	for _, i := range []int{5, 0, 17, 3} {
		fs[i], fs[len(fs)-1-i] = fs[len(fs)-1-i], fs[i]
	}
	for i := range fs {
		if err := applyFixture(context.Background(), e.store, &fs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return fs
}

func (e *testEnv) search(t testing.TB, token, query string) response {
	t.Helper()
	path := PushPath
	if query != "" {
		path += "?" + query
	}
	return e.do(t, newRequest(http.MethodGet, path, token, "", ""))
}

// searchPage is a 200 of the search: its tracking ids and next cursor.
func searchPage(t testing.TB, r response) (ids []string, next string) {
	t.Helper()
	if r.status != http.StatusOK || r.body["success"] != true {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	data, ok := r.body["data"].([]any)
	if !ok {
		t.Fatalf("data is not an array: %s", r.raw)
	}
	for _, d := range data {
		ids = append(ids, d.(map[string]any)["tracking_id"].(string))
	}
	n, present := r.body["next"]
	if !present {
		t.Fatalf("no next: %s", r.raw)
	}
	if n != nil {
		next = n.(string)
		if next == "" {
			t.Fatalf("empty next: %s", r.raw)
		}
	}
	return ids, next
}

// walk follows a search's next cursors from its first page to its last;
// between pages it calls between, if set.
// searchAnswered is e.search that retries a 503 "cannot be read right
// now", as the answer tells a client to: on a loaded machine (CI, -race,
// every package's tests on one Postgres) a search now and then waits out
// the api's 5 s read bound. Three in a row fail the caller.
func (e *testEnv) searchAnswered(t testing.TB, token, query string) response {
	t.Helper()
	var r response
	for range 3 {
		if r = e.search(t, token, query); r.status != http.StatusServiceUnavailable || r.body["message"] != MsgSearchUnavailable {
			return r
		}
		t.Logf("search %q: 503, retried", query)
	}
	return r
}

func (e *testEnv) walk(t testing.TB, token, query string, limit int, between func()) []string {
	t.Helper()
	var all []string
	cur := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("the walk does not end")
		}
		q := fmt.Sprintf("limit=%d", limit)
		if query != "" {
			q = query + "&" + q
		}
		if cur != "" {
			q += "&cursor=" + url.QueryEscape(cur)
		}
		ids, next := searchPage(t, e.searchAnswered(t, token, q))
		if len(ids) > limit || next != "" && len(ids) != limit {
			t.Fatalf("page %d of %q: %d records, next %q", pages, query, len(ids), next)
		}
		all = append(all, ids...)
		if next == "" {
			return all
		}
		cur = next
		if between != nil {
			between()
		}
	}
}

func expected(fs []searchFixture, client string, q url.Values) []string {
	var m []searchFixture
	for _, f := range fs {
		if f.matches(client, q) {
			m = append(m, f)
		}
	}
	slices.SortFunc(m, newestFirst)
	ids := []string{}
	for _, f := range m {
		ids = append(ids, f.trackingID)
	}
	return ids
}

// TestSearch: each filter and their combinations find exactly the
// client's records the model says, newest first, in the single GET's
// record shape; another client's records never show; every walk with a
// small limit sees each record exactly once.
func TestSearch(t *testing.T) {
	t.Parallel()
	reg := metrics.New("api")
	e := newTestEnv(t, func(o *Options) { o.Metrics = reg })
	fs := searchFixtures(t, e)
	since := fixedNow.Add(-100 * time.Minute)
	for _, tc := range []struct {
		name, query string
		client      string // default acme
	}{
		{name: "none"},
		{name: "none, globex", client: "globex"},
		{name: "reference", query: "reference=INV-1"},
		{name: "reference, globex", query: "reference=INV-1", client: "globex"},
		{name: "reference trimmed as POST trims", query: "reference=%20INV-2%20"},
		{name: "reference no one has", query: "reference=NOPE"},
		{name: "reference of the other client only", query: "reference=R-12"},
		{name: "reference of the other client only, globex", query: "reference=R-12", client: "globex"},
		{name: "phone 07", query: "phone=0712000001"},
		{name: "phone +254 encoded", query: "phone=%2B254712000001"},
		{name: "phone with spaces", query: "phone=712+000+001"},
		{name: "phone, globex", query: "phone=254712000001", client: "globex"},
		{name: "status 0", query: "status=0"},
		{name: "status 1", query: "status=1"},
		{name: "status Pending", query: "status=Pending"},
		{name: "status Success", query: "status=Success"},
		{name: "status Cancelled by User", query: "status=Cancelled+by+User"},
		{name: "status Insufficient Balance", query: "status=Insufficient%20Balance"},
		{name: "status Timed Out", query: "status=Timed+Out"},
		{name: "status Unknown", query: "status=Unknown"},
		{name: "status Failed", query: "status=Failed"},
		{name: "status Transaction Expired, none", query: "status=Transaction+Expired"},
		{name: "since Z", query: "since=" + since.Format(time.RFC3339)},
		{name: "since with an offset", query: "since=" + url.QueryEscape(since.In(time.FixedZone("EAT", 3*3600)).Format(time.RFC3339))},
		{name: "since a record's second", query: "since=" + fs[0].at.Truncate(time.Second).Format(time.RFC3339Nano)},
		{name: "reference and status", query: "reference=INV-1&status=1"},
		{name: "reference and phone", query: "reference=INV-1&phone=0712000001"},
		{name: "phone, status and since", query: "phone=0712000001&status=Failed&since=" + since.Format(time.RFC3339)},
		{name: "all four", query: "reference=INV-1&phone=0712000001&status=Pending&since=" + since.Format(time.RFC3339)},
		{name: "all four, globex", client: "globex", query: "reference=INV-1&phone=0712000001&status=0&since=" + since.Format(time.RFC3339)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client, token := tc.client, globexToken
			if client == "" || client == "acme" {
				client, token = "acme", acmeToken
			}
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			want := expected(fs, client, q)
			full := "limit=200"
			if tc.query != "" {
				full = tc.query + "&" + full
			}
			got, next := searchPage(t, e.searchAnswered(t, token, full))
			if next != "" {
				t.Errorf("next %q on a page of %d records", next, len(got))
			}
			if got == nil {
				got = []string{}
			}
			if diff := gocmp.Diff(want, got); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
			if len(want) > 2 {
				for _, limit := range []int{1, 2, 3} {
					if diff := gocmp.Diff(want, e.walk(t, token, tc.query, limit, nil)); diff != "" {
						t.Errorf("walk with limit %d (-want +got):\n%s", limit, diff)
					}
				}
			}
		})
	}
	t.Run("shapes as the single GET", func(t *testing.T) {
		t.Parallel()
		r := e.search(t, acmeToken, "limit=200")
		var page struct {
			Data []json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(r.raw), &page); err != nil || len(page.Data) == 0 {
			t.Fatalf("%v: %s", err, r.raw)
		}
		for _, d := range page.Data {
			got := jsonMap(t, d)
			single := e.get(t, acmeToken, got["tracking_id"].(string))
			if single.status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", got["tracking_id"], single.status, single.raw)
			}
			if diff := gocmp.Diff(single.body["data"], got); diff != "" {
				t.Errorf("record (-GET +search):\n%s", diff)
			}
		}
	})
	t.Run("default limit", func(t *testing.T) {
		t.Parallel()
		ids, next := searchPage(t, e.search(t, acmeToken, "reference=BULK"))
		if len(ids) != DefaultSearchLimit || next != "" {
			t.Errorf("%d records, next %q; want %d and none", len(ids), next, DefaultSearchLimit)
		}
		ids, next = searchPage(t, e.search(t, acmeToken, "reference=BULK&limit=49"))
		if len(ids) != 49 || next == "" {
			t.Errorf("limit 49: %d records, next %q", len(ids), next)
		}
		// acme's cursor is no cursor of globex's.
		wantRefused(t, e.search(t, globexToken, "reference=BULK&limit=49&cursor="+url.QueryEscape(next)), "cursor")
	})
	t.Run("metrics by route", func(t *testing.T) {
		// Not parallel: it runs before the parallel subtests start.
		searchPage(t, e.search(t, acmeToken, "limit=1"))
		e.search(t, acmeToken, "limit=0")
		for _, c := range [][]string{
			{"code", "200", "method", "GET", "route", PushPath},
			{"code", "400", "method", "GET", "route", PushPath},
		} {
			if got := reg.Value("stkgate_http_requests_total", c...); got < 1 {
				t.Errorf("stkgate_http_requests_total%v = %v", c, got)
			}
		}
	})
}

// wantRefused checks a 400 whose errors name exactly fields, the first of
// them in its message.
func wantRefused(t testing.TB, r response, fields ...string) {
	t.Helper()
	if r.status != http.StatusBadRequest || r.body["success"] != false {
		t.Fatalf("status %d, want 400: %s", r.status, r.raw)
	}
	errs, _ := r.body["errors"].(map[string]any)
	var got []string
	for f := range errs {
		got = append(got, f)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(fields))
	if !slices.Equal(got, want) {
		t.Errorf("errors name %q, want %q: %s", got, want, r.raw)
	}
	msgs, _ := errs[fields[0]].([]any)
	if len(msgs) != 1 || r.body["message"] != msgs[0] {
		t.Errorf("message %q is not %s's error: %s", r.body["message"], fields[0], r.raw)
	}
}

// TestSearchRefusals: every bad parameter is a 400 that names it (the
// message is the first one's, in the order reference, status, phone,
// since, limit, cursor, then unknown ones), and nothing is searched.
func TestSearchRefusals(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	f := searchFixture{client: "acme", ref: "INV-1", phone: "254712000001", at: fixedNow}
	g := f
	g.at = fixedNow.Add(-time.Minute)
	for _, x := range []*searchFixture{&f, &g} {
		if err := applyFixture(context.Background(), e.store, x); err != nil {
			t.Fatal(err)
		}
	}
	_, refCursor := searchPage(t, e.search(t, acmeToken, "reference=INV-1&limit=1"))
	_, allCursor := searchPage(t, e.search(t, acmeToken, "limit=1"))
	if refCursor == "" || allCursor == "" {
		t.Fatal("set-up: no cursor")
	}
	if _, next := searchPage(t, e.search(t, acmeToken, "reference=%20INV-1&limit=1&cursor="+refCursor)); next != "" {
		t.Errorf("the cursor of the same search (its reference written otherwise) was refused or went wrong: next %q", next)
	}
	for _, tc := range []struct {
		name, query string
		fields      []string
	}{
		{"limit 0", "limit=0", []string{"limit"}},
		{"limit over the max", "limit=201", []string{"limit"}},
		{"limit huge", "limit=99999999999999999999", []string{"limit"}},
		{"limit negative", "limit=-1", []string{"limit"}},
		{"limit signed", "limit=%2B5", []string{"limit"}},
		{"limit fraction", "limit=1.5", []string{"limit"}},
		{"limit word", "limit=ten", []string{"limit"}},
		{"limit empty", "limit=", []string{"limit"}},
		{"limit twice", "limit=5&limit=6", []string{"limit"}},
		{"cursor garbage", "cursor=abc", []string{"cursor"}},
		{"cursor of another search", "cursor=" + refCursor, []string{"cursor"}},
		{"cursor of no filter, with one", "reference=INV-1&cursor=" + allCursor, []string{"cursor"}},
		{"cursor changed", "cursor=" + flipCursor(allCursor), []string{"cursor"}},
		{"cursor padded", "cursor=" + allCursor + "%3D", []string{"cursor"}},
		{"cursor empty", "cursor=", []string{"cursor"}},
		{"since a word", "since=yesterday", []string{"since"}},
		{"since a date", "since=2024-03-21", []string{"since"}},
		{"since no zone", "since=2024-03-21T11:30:01", []string{"since"}},
		{"since + unencoded", "since=2024-03-21T14:30:01+03:00", []string{"since"}},
		{"since unix", "since=1711020601", []string{"since"}},
		{"status lower case", "status=success", []string{"status"}},
		{"status 2", "status=2", []string{"status"}},
		{"status unknown", "status=Paid", []string{"status"}},
		{"status empty", "status=", []string{"status"}},
		{"phone short", "phone=12345", []string{"phone"}},
		{"phone not Kenyan", "phone=%2B14155550100", []string{"phone"}},
		{"phone blank", "phone=+++", []string{"phone"}},
		{"reference too long", "reference=ABCDEFGHIJKLM", []string{"reference"}},
		{"reference NUL", "reference=INV%00", []string{"reference"}},
		{"reference bad UTF-8", "reference=%FF%FE", []string{"reference"}},
		{"reference invisible", "reference=INV%E2%80%AE1", []string{"reference"}},
		{"reference bad escape", "reference=%zz", []string{"reference"}},
		{"reference twice", "reference=INV-1&reference=INV-2", []string{"reference"}},
		{"unknown parameter", "referense=INV-1", []string{"referense"}},
		{"page, not a cursor", "page=2", []string{"page"}},
		{"semicolon", "reference=INV-1;limit=5", []string{"query"}},
		{"name bad escape", "%zz=1", []string{"query"}},
		{"several, in order", "limit=0&status=paid&since=x&phone=1&reference=" + strings.Repeat("x", 13) + "&extra=1",
			[]string{"reference", "status", "phone", "since", "limit", "extra"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantRefused(t, e.search(t, acmeToken, tc.query), tc.fields...)
		})
	}
	t.Run("first error's message", func(t *testing.T) {
		t.Parallel()
		r := e.search(t, acmeToken, "limit=0&status=paid")
		if r.body["message"] != msgStatusInvalid {
			t.Errorf("message %q, want the status's", r.body["message"])
		}
	})
	t.Run("unknown parameters named, a few", func(t *testing.T) {
		t.Parallel()
		var q []string
		for i := range 50 {
			q = append(q, fmt.Sprintf("p%d=1", i))
		}
		q = append(q, strings.Repeat("n", 1000)+"=1")
		r := e.search(t, acmeToken, strings.Join(q, "&"))
		if errs, _ := r.body["errors"].(map[string]any); r.status != http.StatusBadRequest || len(errs) != maxUnknownReported {
			t.Errorf("status %d, %d errors: %.300s", r.status, len(errs), r.raw)
		}
	})
	t.Run("unauthenticated", func(t *testing.T) {
		t.Parallel()
		r := e.search(t, "nope", "reference=INV-1")
		if r.status != http.StatusUnauthorized {
			t.Errorf("status %d: %s", r.status, r.raw)
		}
	})
}

// flipCursor is c with one character changed, still base64url.
func flipCursor(c string) string {
	b := []byte(c)
	if b[5] == 'A' {
		b[5] = 'B'
	} else {
		b[5] = 'A'
	}
	return string(b)
}

// TestSearchPaginationUnderInserts: while other goroutines insert records
// between (and during) page fetches, older, newer and in the same
// microsecond as those already there, a walk with a small limit sees every
// record that existed at its first page exactly once, repeats none, and
// stays newest first.
func TestSearchPaginationUnderInserts(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) {
		o.Tokens = append(slices.Clone(testTokens), ClientToken{Client: "initech", Token: initechToken})
	})
	ctx := context.Background()
	var existing []searchFixture
	for i := range 40 {
		f := searchFixture{client: "initech", ref: "INV-9", phone: "254712000009",
			at: fixedNow.Add(-time.Duration(i) * time.Minute)}
		if err := applyFixture(ctx, e.store, &f); err != nil {
			t.Fatal(err)
		}
		existing = append(existing, f)
	}

	var (
		inserted atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		// kicks ask the inserters for one more record; done tells one
		// was inserted.
		kicks = make(chan struct{}, 1000)
		done  = make(chan struct{}, 1000)
	)
	insert := func(g, n int) {
		f := searchFixture{client: "initech", ref: "INV-9", phone: "254712000009"}
		switch n % 3 {
		case 0: // among the existing records, anywhere
			f.at = fixedNow.Add(-time.Duration((g*7+n*13)%40) * time.Minute).Add(time.Duration(n+1) * time.Millisecond)
		case 1: // the same microsecond as an existing one: the id decides
			f.at = existing[(g*5+n*3)%len(existing)].at
		case 2: // newer than all
			f.at = fixedNow.Add(time.Duration(n+1) * time.Second)
		}
		if err := applyFixture(ctx, e.store, &f); err != nil {
			t.Error(err)
		}
		inserted.Add(1)
	}
	const inserters = 3
	stopInserters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopInserters) // also when the walk fails
	for g := range inserters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-kicks:
					insert(g, n)
					done <- struct{}{}
				}
			}
		}()
	}
	got := e.walk(t, initechToken, "reference=INV-9", 3, func() {
		// Each inserter inserts a record: at least one lands between
		// these two pages, the others while the next one is read.
		for range inserters {
			kicks <- struct{}{}
		}
		<-done
	})
	stopInserters()
	if inserted.Load() < int64(len(existing)/3) {
		t.Errorf("only %d records inserted during the walk", inserted.Load())
	}

	seen := map[string]int{}
	for _, id := range got {
		seen[id]++
		if seen[id] == 2 {
			t.Errorf("%s seen twice", id)
		}
	}
	for _, f := range existing {
		if seen[f.trackingID] != 1 {
			t.Errorf("record of %s (id %d) seen %d times", f.at, f.id, seen[f.trackingID])
		}
	}
	// Newest first across the walk: positions strictly decrease.
	pos := map[string]store.Position{}
	recs, err := e.store.Search(ctx, "initech", store.SearchFilter{}, nil, 100000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		pos[r.TrackingID] = store.Position{CreatedAt: r.CreatedAt, ID: r.ID}
	}
	for i := 1; i < len(got); i++ {
		a, b := pos[got[i-1]], pos[got[i]]
		if !(b.CreatedAt.Before(a.CreatedAt) || b.CreatedAt.Equal(a.CreatedAt) && b.ID < a.ID) {
			t.Fatalf("record %d (%v) does not come after record %d (%v)", i, b, i-1, a)
		}
	}
}

// TestSearchLimitedAndUnavailable: the search shares the client's rate
// limit with POST and GET, and Postgres down is a 503 with Retry-After,
// its cause not shown.
func TestSearchLimitedAndUnavailable(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(o *Options) { o.RateLimit, o.RateBurst = 0.01, 2 })
	searchPage(t, e.search(t, acmeToken, "reference=INV-1"))
	e.db.Close()
	r := e.search(t, acmeToken, "reference=INV-1")
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "5" ||
		r.body["message"] != MsgSearchUnavailable || strings.Contains(r.raw, "sql") {
		t.Errorf("Postgres down: %d Retry-After %q: %s", r.status, r.header.Get("Retry-After"), r.raw)
	}
	r = e.search(t, acmeToken, "reference=INV-1")
	if r.status != http.StatusTooManyRequests || r.body["message"] != MsgRateLimited {
		t.Errorf("over the rate: %d %s", r.status, r.raw)
	}
}

// TestSearchGolden pins the search's wire formats: a page with a next
// cursor, the last page, an empty one, a refusal, and the cursor itself (a
// change to its format breaks every cursor a client holds across a
// deploy, so it must be meant).
func TestSearchGolden(t *testing.T) {
	t.Parallel()
	created := time.Date(2024, 3, 21, 11, 30, 1, 123456000, time.UTC)
	rec := func(id int64, tracking string, at time.Time) store.Record {
		return store.Record{ID: id, TrackingID: tracking, Client: "acme", PhoneNumber: "254712345678", Amount: 1500,
			Reference: "INV-2024-001", Status: events.StatusPending, StatusLabel: events.LabelPending,
			CreatedAt: at, UpdatedAt: at}
	}
	recs := []store.Record{
		rec(7, "01a24d71-a1ff-79ab-a63d-91016e25e08e", created),
		rec(5, "01a24d71-a0d1-7c58-b98d-d4ea04c9987b", created.Add(-time.Minute)),
		rec(4, "01a24d71-a0a2-78c3-af31-ca1e5f92c001", created.Add(-2*time.Minute)),
	}
	q, err := parseSearch("reference=INV-2024-001&limit=2", "acme")
	if err != nil {
		t.Fatal(err)
	}
	_, refused := parseSearch("limit=0&status=paid&colour=red", "acme")
	var reqErr *RequestError
	if !errors.As(refused, &reqErr) {
		t.Fatalf("refusal %v", refused)
	}
	for name, body := range map[string]any{
		"search-page.json":    pageOf(recs, 2, q.scope),
		"search-last.json":    pageOf(recs[2:], 2, q.scope),
		"search-empty.json":   pageOf(nil, 2, q.scope),
		"search-refused.json": failure{Message: reqErr.Message, Errors: reqErr.Fields},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := json.MarshalIndent(body, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name, append(b, '\n'))
		})
	}
}

// TestSearchBoundedWork: searches share Postgres's connections with every
// client's payments, so few run at once per instance and per client (the
// others are refused at once, 429 with Retry-After, never queued), and one
// that runs out of the store's SearchTimeout is a 503 that says to narrow
// the search. A lock on the table stands in for a search that takes long.
func TestSearchBoundedWork(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		total, per int
		// busy is the client whose search is refused while acme's runs.
		busy string
	}{
		{"per client", 2, 1, acmeToken},
		{"per instance", 1, 1, globexToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, func(o *Options) { o.SearchConcurrency, o.ClientSearchConcurrency = tt.total, tt.per })
			e.store.SearchTimeout = time.Minute
			tx := e.db.MustBegin()
			defer func() { _ = tx.Rollback() }()
			tx.MustExec(`LOCK TABLE stk_pushes IN ACCESS EXCLUSIVE MODE`)
			held := make(chan response, 1)
			go func() { held <- e.search(t, acmeToken, "reference=INV-1") }()
			wait.For(t, "acme's search under way", func() bool { return e.h.searches.running() == 1 })

			r := e.search(t, tt.busy, "reference=INV-1")
			if r.status != http.StatusTooManyRequests || r.body["message"] != MsgSearchBusy || r.header.Get("Retry-After") != "1" {
				t.Errorf("a search beyond the bound: %d Retry-After %q: %s", r.status, r.header.Get("Retry-After"), r.raw)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			searchPage(t, <-held)
			if n := e.h.searches.running(); n != 0 {
				t.Errorf("%d searches still counted as running", n)
			}
			searchPage(t, e.search(t, tt.busy, "reference=INV-1"))
		})
	}
	t.Run("too slow", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t, nil)
		e.store.SearchTimeout = 100 * time.Millisecond
		tx := e.db.MustBegin()
		defer func() { _ = tx.Rollback() }()
		tx.MustExec(`LOCK TABLE stk_pushes IN ACCESS EXCLUSIVE MODE`)
		r := e.search(t, acmeToken, "status=Failed")
		if r.status != http.StatusServiceUnavailable || r.body["message"] != MsgSearchTooSlow || strings.Contains(r.raw, "sql") {
			t.Errorf("a search out of time: %d: %s", r.status, r.raw)
		}
	})
}

// A since finer than Postgres's microseconds is rounded up: a record at
// the microsecond before it does not match.
func TestSearchSinceMicroseconds(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"2024-03-21T11:30:00.0000004Z":      "2024-03-21T11:30:00.000001Z",
		"2024-03-21T11:30:00.000001Z":       "2024-03-21T11:30:00.000001Z",
		"2024-03-21T14:30:00.0000019+03:00": "2024-03-21T11:30:00.000002Z",
		"2024-03-21T11:30:00Z":              "2024-03-21T11:30:00Z",
	} {
		s, err := parseSearch("since="+url.QueryEscape(in), "acme")
		if err != nil {
			t.Fatalf("since %s: %v", in, err)
		}
		if got := s.filter.Since.Format(time.RFC3339Nano); got != want {
			t.Errorf("since %s: %s, want %s", in, got, want)
		}
	}
}
