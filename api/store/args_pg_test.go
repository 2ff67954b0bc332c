package store_test

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/stkgate/stkgate/api/store"
	"github.com/stkgate/stkgate/api/store/pgtest"
)

// Postgres reads every array upsert sends back as exactly the strings and
// numbers written, and as the same array pq.Array sent: quotes,
// backslashes, commas, braces, NULL-like words, empty strings, spaces at
// either end, every control character but NUL, multi-byte characters.
func TestArgsAreReadBackByPostgres(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	pieces := []string{"", "a", `"`, `\`, `\\`, `\"`, ",", "{", "}", "{}", " ", "  x  ", "NULL", "null", "Null", "é", "日本",
		"🙂", "'", "\t", "\n", "\r", "\v", "\f", "\x01", "\x1f", "\x7f", "\u00a0", "\u2028", "ARRAY[1]", "(", ")", ";", "$1"}
	rng := rand.New(rand.NewPCG(5, 8))
	for trial := range 300 {
		n := 1 + rng.IntN(8)
		ss := make([]string, n)
		ids := make([]string, n)
		for i := range ss {
			var sb strings.Builder
			for range rng.IntN(5) {
				sb.WriteString(pieces[rng.IntN(len(pieces))])
			}
			ss[i] = sb.String()
			if !utf8.ValidString(ss[i]) {
				t.Fatalf("bad piece %q", ss[i])
			}
			ids[i] = uuid.NewString()
		}
		// Single strings that are whole words Postgres could read unquoted.
		if trial < len(pieces) {
			ss[0] = pieces[trial]
		}
		num := []int64{0, -1, 1, math.MaxInt16, math.MinInt16}[rng.IntN(5)]
		args := store.TextArgs(ids, ss, num)
		if len(args) != 17 {
			t.Fatalf("%d args", len(args))
		}
		for i, arg := range args {
			typ, want, ref := "text[]", ss, any(pq.Array(ss))
			switch i {
			case 0, 16:
				typ, want, ref = "uuid[]", ids, pq.Array(ids)
			case 3, 6, 13:
				typ = "bigint[]"
				nums := make([]int64, n)
				want = make([]string, n)
				for k := range nums {
					nums[k] = num
					want[k] = strconv.FormatInt(num, 10)
				}
				ref = pq.Array(nums)
			}
			var got []string
			rows, err := db.QueryContext(ctx, `SELECT x::text FROM unnest($1::`+typ+`) AS x`, arg)
			if err != nil {
				t.Fatalf("trial %d, $%d %q: %v", trial, i+1, arg, err)
			}
			for rows.Next() {
				var s *string
				if err := rows.Scan(&s); err != nil {
					t.Fatal(err)
				}
				if s == nil {
					t.Fatalf("trial %d, $%d: a NULL element from %q", trial, i+1, arg)
				}
				got = append(got, *s)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			rows.Close()
			if !slices.Equal(got, want) {
				t.Fatalf("trial %d, $%d %q: Postgres read %q, want %q", trial, i+1, arg, got, want)
			}
			var same bool
			if err := db.QueryRowContext(ctx, `SELECT $1::`+typ+` IS NOT DISTINCT FROM $2::`+typ, arg, ref).Scan(&same); err != nil {
				t.Fatal(err)
			}
			if !same {
				t.Fatalf("trial %d, $%d: %q is not the array pq.Array sent", trial, i+1, arg)
			}
		}
	}
}
