package redact

import (
	"regexp"
	"strings"
	"testing"
)

func TestURLs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:s3cret@a:1,nats://t0ken@b:2, nats://c:3", "nats://REDACTED@a:1,nats://REDACTED@b:2, nats://c:3"},
		{"postgres://stk:s3cret@db:5432/stkgate?sslmode=require", "postgres://REDACTED@db:5432/stkgate?sslmode=require"},
		{"postgres://stk@db/stkgate", "postgres://REDACTED@db/stkgate"},
		{"postgres://db/stkgate?user=stk&password=s3cret&sslmode=disable", "postgres://db/stkgate?user=stk&password=REDACTED&sslmode=disable"},
		{"postgres://stk:s3cret@db:bad/", "postgres://REDACTED@db:bad/"},
		{"postgres://stk:s3c@ret@h1:5432,h2:5432/db", "postgres://REDACTED@h1:5432,h2:5432/db"},
		{"host=db user=stk password=s3cret dbname=stkgate", "host=db user=stk password=REDACTED dbname=stkgate"},
		{"host=db password = 's3 cr\\'et' dbname=stkgate", "host=db password = REDACTED dbname=stkgate"},
		{"host=db password='s3 cret", "host=db password=REDACTED"},
		{"host=db password=p@ss,w0rd dbname=x", "host=db password=REDACTED dbname=x"},
		// No scheme: url.Parse reads "user" as the scheme and finds no user.
		{"user:s3cret@nats:4222", "REDACTED@nats:4222"},
		{"nats://u:s3c,ret@h:4222", "nats://REDACTED@h:4222"},
		{"nats://u:s3 cret@h:4222", "nats://REDACTED@h:4222"},
		{"wss://h/?token=s3cret", "wss://h/?token=REDACTED"},
	} {
		got := URLs(tc.in)
		if got != tc.want {
			t.Errorf("URLs(%q) = %q, want %q", tc.in, got, tc.want)
		}
		for _, secret := range []string{"s3cret", "t0ken", "s3 cr", "ret@", "w0rd", "s3c"} {
			if strings.Contains(tc.in, secret) && strings.Contains(got, secret) {
				t.Errorf("URLs(%q) = %q shows %q", tc.in, got, secret)
			}
		}
	}
}

func TestSecret(t *testing.T) {
	if Secret("") != "" || Secret("x") != Mask {
		t.Errorf("Secret: %q, %q", Secret(""), Secret("x"))
	}
}

var schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.\-]*$`)

// FuzzURLs: whatever a password holds, and wherever the URL puts it, the
// redacted text does not depend on it: it reads the same as with a
// password of as many x.
func FuzzURLs(f *testing.F) {
	for _, seed := range []struct{ scheme, password string }{
		{"nats", "s3cret"}, {"postgres", "p@ss/w0rd"}, {"", "pa ss://word"}, {"tls", "a://b@c"},
		{"postgres", "x?password=y"}, {"key=value", "s3 cr'et"}, {"nats", "pw://zz@x"},
	} {
		f.Add(seed.scheme, seed.password)
	}
	f.Fuzz(func(t *testing.T, scheme, password string) {
		// A comma separates the URLs of a list: in a URL's password it
		// must be written %2C.
		if password == "" || strings.Contains(password, ",") {
			t.Skip()
		}
		if scheme != "" && scheme != "key=value" && !schemeRE.MatchString(scheme) {
			t.Skip() // not a URL
		}
		if scheme == "" && strings.HasPrefix(password, "//") {
			t.Skip() // "user://…": a URL whose scheme is user
		}
		inputs := func(pw string) []string {
			switch scheme {
			case "key=value":
				return []string{"host=db user=stk password='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw) + "' dbname=x"}
			case "":
				return []string{"user:" + pw + "@host:4222"}
			}
			return []string{
				scheme + "://user:" + pw + "@host:4222/db",
				scheme + "://" + pw + "@host:4222",
				"nats://a:b@n1:4222," + scheme + "://user:" + pw + "@host:4222",
			}
		}
		with, without := inputs(password), inputs(strings.Repeat("x", len(password)))
		for i := range with {
			if got, want := URLs(with[i]), URLs(without[i]); got != want {
				t.Errorf("URLs(%q) = %q, but with another password %q: it shows some of it", with[i], got, want)
			}
		}
	})
}

func TestPhones(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"/api/stk-push", "/api/stk-push"},
		{"/api/stk-push/254712345678", "/api/stk-push/*********678"},
		{"/api/stk-push/+254712345678", "/api/stk-push/+*********678"},
		{"/api/stk-push/0712345678/", "/api/stk-push/*******678/"},
		{"/api/stk-push/712345678", "/api/stk-push/******678"},
		{"/api/stk-push/71234567", "/api/stk-push/71234567"}, // eight digits: not a phone
		{"/x/tel:254712345678,0712345678", "/x/tel:*********678,*******678"},
		{"/api/stk-push/0190a3b2-7c4d-7e8f-9a0b-123456789012", "/api/stk-push/0190a3b2-7c4d-7e8f-9a0b-123456789012"},
		{"/api/stk-push/0190a3b2-7c4d-7e8f-9a0b-123456789012/254712345678", "/api/stk-push/0190a3b2-7c4d-7e8f-9a0b-123456789012/*********678"},
		// Not a UUID (one digit too many): its digits are not spared.
		{"/a/0190a3b2-7c4d-7e8f-9a0b-1234567890123", "/a/0190a3b2-7c4d-7e8f-9a0b-**********123"},
	} {
		if got := Phones(tc.in); got != tc.want {
			t.Errorf("Phones(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzPhones(f *testing.F) {
	for _, s := range []string{"/api/stk-push/254712345678", "/0190a3b2-7c4d-7e8f-9a0b-123456789012", "/é/1234567890/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := Phones(in)
		if len(got) != len(in) {
			t.Fatalf("Phones(%q) = %q: length changed", in, got)
		}
		run := 0
		for i := range len(got) {
			if got[i] != in[i] && (got[i] != '*' || !isDigit(in[i])) {
				t.Fatalf("Phones(%q) = %q: byte %d changed to other than a masked digit", in, got, i)
			}
			if isDigit(got[i]) {
				run++
				if run > 3 && run >= minPhoneDigits && !isUUID(segment(in, strings.LastIndexByte(in[:i], '/')+1)) {
					t.Fatalf("Phones(%q) = %q: a run of %d digits shown", in, got, run)
				}
			} else {
				run = 0
			}
		}
	})
}
