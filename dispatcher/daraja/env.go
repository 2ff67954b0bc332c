package daraja

import (
	"net"
	"net/url"
	"strings"

	"github.com/stkgate/stkgate/events/kit/envconf"
)

// The sandbox's published settings, the defaults of DARAJA_SHORTCODE and
// DARAJA_PASSKEY; they are no secret.
const (
	SandboxShortCode = "174379"
	SandboxPassKey   = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
)

// ProductionHost is Daraja's production host (ProductionURL's).
const ProductionHost = "api.safaricom.co.ke"

// DefaultMaxRPS is DARAJA_MAX_RPS's default, and MaxMaxRPS its bound:
// beyond it the bound is none.
const (
	DefaultMaxRPS = 20.0
	MaxMaxRPS     = 10000
)

// ConfigFromEnv reads the DARAJA_* settings through e, for the dispatcher
// and the reconciler, which share one Daraja app: DARAJA_BASE_URL (default
// SandboxURL), DARAJA_CONSUMER_KEY and DARAJA_CONSUMER_SECRET (required),
// DARAJA_SHORTCODE and DARAJA_PASSKEY (the sandbox's, refused on
// production), DARAJA_TRANSACTION_TYPE (TransactionPayBill),
// DARAJA_PARTY_B (the shortcode) and DARAJA_MAX_RPS (DefaultMaxRPS). No
// error repeats a key, secret, passkey or URL; a shortcode is not repeated
// either, as it may be a secret pasted in the wrong place.
func ConfigFromEnv(e *envconf.Env) Config {
	var c Config
	c.BaseURL = baseURLFromEnv(e)
	c.ConsumerKey = e.Required("DARAJA_CONSUMER_KEY", "the consumer key of your Daraja app")
	if strings.ContainsAny(c.ConsumerKey, ":\r\n") {
		// Basic authentication cannot carry a colon in the user part.
		e.Failf("DARAJA_CONSUMER_KEY", "the value has a ':' or a line break; it must be the consumer key of your Daraja app")
	}
	c.ConsumerSecret = e.Required("DARAJA_CONSUMER_SECRET", "the consumer secret of your Daraja app")

	c.ShortCode = e.String("DARAJA_SHORTCODE", SandboxShortCode)
	if !isDigits(c.ShortCode, 5, 7) {
		e.Failf("DARAJA_SHORTCODE", "the value is not 5 to 7 digits; it must be your business shortcode")
	}
	c.PassKey = e.String("DARAJA_PASSKEY", SandboxPassKey)
	if strings.ContainsAny(c.PassKey, " \t\r\n") {
		e.Failf("DARAJA_PASSKEY", "the value has white space; it must be the passkey Safaricom gave your shortcode")
	}
	if Host(c.BaseURL) == ProductionHost {
		// The defaults are the sandbox's: taken by production, they fail
		// every push, or push for someone else's paybill.
		if c.ShortCode == SandboxShortCode {
			e.Failf("DARAJA_SHORTCODE", "%q is the sandbox's shortcode; it must be your own on production (%s)", SandboxShortCode, ProductionHost)
		}
		if c.PassKey == SandboxPassKey {
			e.Failf("DARAJA_PASSKEY", "the sandbox's published passkey is not for production; it must be your own on %s", ProductionHost)
		}
	}

	c.TransactionType = e.OneOf("DARAJA_TRANSACTION_TYPE", TransactionPayBill, TransactionPayBill, TransactionBuyGoods)
	c.PartyB = e.String("DARAJA_PARTY_B", c.ShortCode)
	if !isDigits(c.PartyB, 5, 10) {
		e.Failf("DARAJA_PARTY_B", "the value is not 5 to 10 digits; it must be the receiving shortcode or till number")
	}
	c.MaxRPS = e.Float("DARAJA_MAX_RPS", DefaultMaxRPS, 0, MaxMaxRPS)
	return c
}

// baseURLFromEnv reads DARAJA_BASE_URL: https, or http on loopback only
// (where a simulator runs), without credentials (New refuses them) and
// without its trailing slash.
func baseURLFromEnv(e *envconf.Env) string {
	const what = "Daraja's base URL"
	base := e.HTTPURL("DARAJA_BASE_URL", SandboxURL, what)
	u, err := url.Parse(base)
	switch {
	case err != nil:
		// HTTPURL took it: cannot happen.
	case u.User != nil:
		e.Failf("DARAJA_BASE_URL", "the URL carries credentials; it must be %s without them", what)
	case u.Scheme == "http" && !IsLoopbackURL(base):
		e.Failf("DARAJA_BASE_URL", "the URL is http on a host other than loopback; it must be https (http only on loopback, where a simulator runs)")
	}
	return strings.TrimRight(base, "/")
}

// Host is the lowercased host name of base, "" if it has none.
func Host(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
}

// IsLoopbackURL reports whether raw names a loopback host (localhost,
// 127.0.0.0/8 or ::1): one only this machine can answer, such as a Daraja
// simulator.
func IsLoopbackURL(raw string) bool {
	host := Host(raw)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
