package uniquekeys

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// FuzzCheckAgreesWithTokens: Check's verdict on any body, at any depth
// bound, is the token walk's (checkTokens), error text included: the
// allocation-free walk (plainlyValid) may only settle what the decoder
// would pass. FuzzPlainlyValid holds the bound at 32; here it varies, as
// it is the one input the callers could change.
func FuzzCheckAgreesWithTokens(f *testing.F) {
	for _, s := range differentialSeeds {
		for _, d := range []uint8{0, 1, 2, 3, 32} {
			f.Add([]byte(s), d)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, d uint8) {
		agree(t, data, int(d%40))
	})
}

var differentialSeeds = []string{
	`{"a":1,"\u0061":2}`, `{"a":1,"\u0041":2}`, `{"\/":1,"/":2}`, `{"a\"":1,"a\u0022":2}`,
	"{\"\xff\":1,\"\xfe\":2}", "{\"\xef\xbf\xbd\":1,\"\xff\":2}", `{"\ud800":1,"\udfff":2}`,
	"\xef\xbb\xbf{}", "{}\x00", `{"a":1}{"a":1,"a":2}`, `[[]]`, `[{}]`, `{"a":{}}`,
	`[-0,0e0,0E-0,1.5e+10,-1.0]`, `[00]`, `[0.]`, `[.0]`, `[+1]`, `[1e]`, `[1e+]`, `[-a]`,
	`[true,false,null]`, `[tru]`, `[nul]`, `[truex]`, `[True]`, "[\"\x7f\"]", "[\"\x1f\"]",
	"{ \t\r\n\"a\" \t\r\n: \t\r\n1 \t\r\n}", "{\f\"a\":1}", "{\v\"a\":1}", "{\u00a0\"a\":1}",
	`{"a":"\u00"}`, `{"a":"\uZZZZ"}`, `{"a":"\x"}`, `{"a":"\`, `{"a`, `{`, `[`, ``, ` `,
}

// TestCheckAgreesWithTokens runs agree over many bodies built near the
// edges: keys from a few spellings of a few names (escaped, non-ASCII,
// invalid UTF-8), objects at and past 32 keys, nesting at and past the
// bound, and a byte here and there cut, doubled or replaced.
func TestCheckAgreesWithTokens(t *testing.T) {
	for _, s := range differentialSeeds {
		for d := range 5 {
			agree(t, []byte(s), d)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	n := 20000
	vouched := 0
	for range n {
		var b strings.Builder
		genValue(r, &b, 0, true)
		data := []byte(b.String())
		if r.IntN(4) == 0 && len(data) > 0 {
			data = mutate(r, data)
		}
		d := r.IntN(8)
		if r.IntN(2) == 0 {
			d = 32
		}
		if plainlyValid(data, d) {
			vouched++
		}
		agree(t, data, d)
		if t.Failed() {
			return
		}
	}
	if vouched < n/10 {
		t.Errorf("plainlyValid vouched for only %d of %d bodies: the generator no longer tests it", vouched, n)
	}
}

func agree(t *testing.T, data []byte, d int) {
	t.Helper()
	want := checkTokens(data, d)
	if plainlyValid(data, d) && want != nil {
		t.Fatalf("plainlyValid(%q, %d) vouched for a body checkTokens refuses: %v", data, d, want)
	}
	got := Check(data, d)
	if (got == nil) != (want == nil) || got != nil && got.Error() != want.Error() {
		t.Fatalf("Check(%q, %d) = %v, checkTokens = %v", data, d, got, want)
	}
}

// spellings of three names, as a key may be written: plain, escaped in
// part, with \/ or an escaped quote, in non-ASCII, in invalid UTF-8 (which
// the decoder reads as U+FFFD, so "\xff" and "\xfe" are the same key).
var spellings = [][]string{
	{`a`, `\u0061`, `\u0061`, `\u0041`, `A`},
	{`a/b`, `a\/b`, `a\u002fb`, `a\u002Fb`},
	{`é`, `\u00e9`, `\u00E9`, "e\u0301"},
	{"\xff", "\xfe", "\xef\xbf\xbd", `\ufffd`, `\ud800`, `\udfff`},
	{`q"`, `q\"`, `q\u0022`},
	{``, `\u0000`, "\x7f"},
}

func genKey(r *rand.Rand, b *strings.Builder, i int) {
	switch r.IntN(4) {
	case 0:
		s := spellings[r.IntN(len(spellings))]
		b.WriteString(s[r.IntN(len(s))])
	case 1:
		b.WriteString("k")
		b.WriteString(string(rune('a' + i%26)))
	default:
		b.WriteString(string(rune('a' + r.IntN(6))))
	}
}

func space(r *rand.Rand, b *strings.Builder) {
	if r.IntN(5) == 0 {
		b.WriteString([]string{" ", "\t", "\n", "\r", " \r\n\t"}[r.IntN(5)])
	}
}

func genValue(r *rand.Rand, b *strings.Builder, depth int, top bool) {
	k := r.IntN(10)
	if top {
		k = r.IntN(2)
	}
	if depth > 36 {
		k = 2 + r.IntN(8)
	}
	switch k {
	case 0:
		b.WriteByte('{')
		space(r, b)
		n := r.IntN(6)
		if depth < 2 && r.IntN(6) == 0 {
			n = 30 + r.IntN(5) // around maxPlainKeys
		}
		if r.IntN(6) == 0 {
			n = 1 // a chain: nesting near the bound
		}
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
				space(r, b)
			}
			b.WriteByte('"')
			genKey(r, b, i)
			b.WriteByte('"')
			space(r, b)
			b.WriteByte(':')
			space(r, b)
			genValue(r, b, depth+1, false)
			space(r, b)
		}
		b.WriteByte('}')
	case 1:
		b.WriteByte('[')
		space(r, b)
		n := r.IntN(4)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
				space(r, b)
			}
			genValue(r, b, depth+1, false)
			space(r, b)
		}
		b.WriteByte(']')
	case 2:
		b.WriteString([]string{"0", "-0", "1", "-12.5e+3", "1E400", "0.0", "9007199254740993", "1e-7"}[r.IntN(8)])
	case 3:
		b.WriteString([]string{"true", "false", "null"}[r.IntN(3)])
	case 4, 5:
		b.WriteByte('"')
		genKey(r, b, r.IntN(30))
		b.WriteByte('"')
	default:
		genValue(r, b, depth+1, depth > 30 && r.IntN(2) == 0)
	}
}

// mutate cuts, doubles, drops or replaces one byte, or appends one.
func mutate(r *rand.Rand, data []byte) []byte {
	i := r.IntN(len(data))
	junk := []byte("{}[]\",:\\u0 \x00\x1f\x7f\xff-+.eE01tfn")
	c := junk[r.IntN(len(junk))]
	switch r.IntN(5) {
	case 0:
		return data[:i]
	case 1:
		return append(append(append([]byte{}, data[:i+1]...), data[i]), data[i+1:]...)
	case 2:
		return append(append([]byte{}, data[:i]...), data[i+1:]...)
	case 3:
		out := append([]byte{}, data...)
		out[i] = c
		return out
	}
	return append(append([]byte{}, data...), c)
}
