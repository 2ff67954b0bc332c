// Package envconf reads the services' settings from the environment and
// collects every bad one, so that a service refuses to start naming all its
// mistakes at once:
//
//	e := envconf.New(os.Getenv)
//	cfg.SyncTimeout = e.Duration("SYNC_TIMEOUT", 30*time.Second, time.Nanosecond, 5*time.Minute)
//	cfg.NATSURL = e.NATSURL("NATS_URL", "")
//	return cfg, e.Err()
//
// A setting unset or empty (after trimming white space) takes its default. A
// bad one takes its default too, and adds an error in one style:
//
//	NAME: "value" is not <what it is not>; it must be <what it accepts>
//
// A value that may be a secret (NATS_URL, or one of the caller's through
// Fail) is never repeated in an error.
package envconf

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/stkgate/stkgate/events/kit/cidr"
)

// Env reads settings through getenv and collects their errors.
type Env struct {
	getenv func(string) string
	errs   []error
}

// New returns an Env reading through getenv (os.Getenv in a main).
func New(getenv func(string) string) *Env {
	return &Env{getenv: getenv}
}

// Err joins the errors of every bad setting read so far, in the order read;
// nil if there is none.
func (e *Env) Err() error { return errors.Join(e.errs...) }

// Add records err, an error that names its variable itself (such as a
// parser's of a list, naming an entry by position); nil adds nothing.
func (e *Env) Add(err error) {
	if err != nil {
		e.errs = append(e.errs, err)
	}
}

// Fail records an error of the setting name, for the checks a service
// makes itself (a secret's length, one setting against another). The error
// is printed after "name: "; it must not repeat a secret.
func (e *Env) Fail(name string, err error) {
	e.errs = append(e.errs, fmt.Errorf("%s: %w", name, err))
}

// Failf is Fail with a formatted message.
func (e *Env) Failf(name, format string, args ...any) {
	e.Fail(name, fmt.Errorf(format, args...))
}

// Raw is the setting trimmed of white space, "" when unset.
func (e *Env) Raw(name string) string {
	return strings.TrimSpace(e.getenv(name))
}

// String is the setting, or def when it is unset or empty.
func (e *Env) String(name, def string) string {
	if v := e.Raw(name); v != "" {
		return v
	}
	return def
}

// Required is the setting; unset or empty is an error saying it must be
// what (such as "the public URL where Safaricom reaches callback-ingest").
func (e *Env) Required(name, what string) string {
	v := e.Raw(name)
	if v == "" {
		e.Failf(name, "required; it must be %s", what)
	}
	return v
}

// bad records the error of a value v that is not what; it must be must.
func (e *Env) bad(name, v, not, must string) {
	e.Failf(name, "%q is not %s; it must be %s", v, not, must)
}

// Int is a whole number from lo to hi (math.MinInt, math.MaxInt: no bound).
func (e *Env) Int(name string, def, lo, hi int) int {
	v := e.Raw(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		e.bad(name, v, "a whole number", intRange(lo, hi, def))
	case n < lo || n > hi:
		e.bad(name, v, "in range", intRange(lo, hi, def))
	default:
		return n
	}
	return def
}

func intRange(lo, hi, def int) string {
	s := "a whole number"
	switch {
	case lo != math.MinInt && hi != math.MaxInt:
		s += fmt.Sprintf(" from %d to %d", lo, hi)
	case lo != math.MinInt:
		s += fmt.Sprintf(" of at least %d", lo)
	case hi != math.MaxInt:
		s += fmt.Sprintf(" of at most %d", hi)
	}
	return s + fmt.Sprintf(", such as %d", def)
}

// Float is a finite number from lo to hi (math.Inf: no bound). NaN and the
// infinities are refused.
func (e *Env) Float(name string, def, lo, hi float64) float64 {
	v := e.Raw(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil || math.IsNaN(f) || math.IsInf(f, 0):
		e.bad(name, v, "a number", floatRange(lo, hi, def))
	case f < lo || f > hi:
		e.bad(name, v, "in range", floatRange(lo, hi, def))
	default:
		return f
	}
	return def
}

func floatRange(lo, hi, def float64) string {
	s := "a number"
	switch {
	case !math.IsInf(lo, -1) && !math.IsInf(hi, 1):
		s += fmt.Sprintf(" from %g to %g", lo, hi)
	case !math.IsInf(lo, -1):
		s += fmt.Sprintf(" of at least %g", lo)
	case !math.IsInf(hi, 1):
		s += fmt.Sprintf(" of at most %g", hi)
	}
	return s + fmt.Sprintf(", such as %g", def)
}

// Unbounded durations, for Duration's lo and hi.
const (
	MinDuration time.Duration = math.MinInt64
	MaxDuration time.Duration = math.MaxInt64
)

// Duration is a Go duration (90s, 1h30m) from lo to hi (MinDuration,
// MaxDuration: no bound; lo 1ns reads "above 0"). A bare number other than
// 0 is refused: it has no unit.
func (e *Env) Duration(name string, def, lo, hi time.Duration) time.Duration {
	v := e.Raw(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		e.bad(name, v, "a duration", durationRange(lo, hi, def))
	case d < lo || d > hi:
		e.bad(name, v, "in range", durationRange(lo, hi, def))
	default:
		return d
	}
	return def
}

func durationRange(lo, hi, def time.Duration) string {
	var r string
	switch {
	case lo == MinDuration && hi == MaxDuration:
	case lo == time.Nanosecond && hi == MaxDuration:
		r = " above 0"
	case lo == time.Nanosecond:
		r = " above 0 and at most " + Short(hi)
	case lo == MinDuration:
		r = " of at most " + Short(hi)
	case hi == MaxDuration:
		r = " of at least " + Short(lo)
	default:
		r = " from " + Short(lo) + " to " + Short(hi)
	}
	if def > 0 {
		r += ", such as " + Short(def)
	}
	return "a duration" + r
}

// Short writes d without its zero parts: 1h rather than 1h0m0s, 1m30s, 0s.
func Short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Bool is true or false (also 1/0, t/f, yes/no, on/off, in any case).
func (e *Env) Bool(name string, def bool) bool {
	v := e.Raw(name)
	if v == "" {
		return def
	}
	switch strings.ToLower(v) {
	case "1", "t", "true", "yes", "y", "on":
		return true
	case "0", "f", "false", "no", "n", "off":
		return false
	}
	e.bad(name, v, "a yes or no", "true or false")
	return def
}

// OneOf is one of allowed, compared without regard to case and returned as
// allowed spells it.
func (e *Env) OneOf(name, def string, allowed ...string) string {
	v := e.Raw(name)
	if v == "" {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	e.bad(name, v, "a choice offered", orList(allowed))
	return def
}

// orList writes a, b or c.
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// MaxReplicas is the most replicas a JetStream stream may have.
const MaxReplicas = 5

// Replicas is a number of JetStream stream replicas, 1 to MaxReplicas.
func (e *Env) Replicas(name string, def int) int {
	return e.Int(name, def, 1, MaxReplicas)
}

// natsSchemes are the schemes a NATS client dials.
var natsSchemes = []string{"nats", "tls", "ws", "wss"}

// NATSURL is a NATS server URL, or a comma-separated list of them, each
// with a host and the scheme nats, tls, ws or wss. An empty def makes it
// required. The value is never repeated in an error: it may carry a
// password or token, which a malformed URL hides from redaction; only the
// position of the bad entry, and a scheme, are.
func (e *Env) NATSURL(name, def string) string {
	v := e.Raw(name)
	if v == "" {
		if def == "" {
			e.Failf(name, "required; it must be %s", natsMust)
		}
		return def
	}
	if err := CheckNATSURL(v); err != nil {
		e.Fail(name, err)
		return def
	}
	return v
}

const natsMust = "a URL such as nats://host:4222 (scheme nats, tls, ws or wss), or several separated by commas"

// CheckNATSURL checks a NATS URL list as NATSURL does, for a Config built
// without the environment. Its error does not repeat list.
func CheckNATSURL(list string) error {
	for i, s := range strings.Split(list, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.Host == "" {
			return fmt.Errorf("entry %d is not a URL with a host; it must be %s", i+1, natsMust)
		}
		ok := false
		for _, scheme := range natsSchemes {
			ok = ok || u.Scheme == scheme
		}
		if !ok {
			// A scheme that parsed is letters, digits, '+', '-' and '.': no secret.
			return fmt.Errorf("scheme %q is not one a NATS client dials; it must be %s", u.Scheme, orList(natsSchemes))
		}
	}
	return nil
}

// CIDRs is a comma-separated list of networks (196.201.214.0/24,
// 2001:db8::/32) or single addresses, read by cidr.Parse.
func (e *Env) CIDRs(name string, def []netip.Prefix) []netip.Prefix {
	v := e.Raw(name)
	if v == "" {
		return def
	}
	ps, err := cidr.Parse(v)
	if err != nil {
		e.Failf(name, "%v; it must be networks such as 196.201.214.0/24 or addresses, separated by commas", err)
		return def
	}
	return ps
}

// ListenAddr is an address to listen on, host:port, where the host may be
// empty (every interface) and the port is a number from 0 to 65535.
func (e *Env) ListenAddr(name, def string) string {
	v := e.Raw(name)
	if v == "" {
		return def
	}
	const must = "host:port or :port, the port a number from 0 to 65535, such as :8080"
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		e.bad(name, v, "host:port", must)
		return def
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		e.bad(name, v, "an address with a valid port", must)
		return def
	}
	return v
}

// HTTPURL is an absolute http or https URL with a host and without query
// or fragment, such as a base URL that paths are added to. An empty def
// makes it required (what says what it is for). The value is never
// repeated in an error: it may carry credentials.
func (e *Env) HTTPURL(name, def, what string) string {
	v := e.Raw(name)
	if v == "" {
		if def == "" {
			e.Failf(name, "required; it must be %s", what)
		}
		return def
	}
	u, err := url.Parse(v)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		e.Failf(name, "the value is not an absolute http(s) URL; it must be %s, such as https://host/path", what)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		e.Failf(name, "the URL has a query or fragment; it must be %s, without either", what)
	default:
		return v
	}
	return def
}

// Default sets *p to def when it is zero or below: the rule of a Config
// built in code (a test's, the dev stack's), whose zero fields mean "the
// default", as an unset variable does for ConfigFromEnv.
func Default[T cmp.Ordered](p *T, def T) {
	var zero T
	if *p <= zero {
		*p = def
	}
}
